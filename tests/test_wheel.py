"""A wheel built from the repository runs from any directory: the presets ship inside it. Built here, unpacked onto
PYTHONPATH (so it shadows the editable checkout), and a one-step job runs from a directory outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

pytestmark = pytest.mark.component


def test_a_built_wheel_runs_a_one_step_job_outside_the_checkout(tmp_path, micro_model_dir):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, capture_output=True, timeout=300)
    [wheel] = list(wheels.glob("rlpipe-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "rlpipe/conf/config.yaml" in names and "rlpipe/conf/algorithm/dapo.yaml" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"  # neither the checkout nor the unpacked wheel
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))

    where = subprocess.run([sys.executable, "-c", "import rlpipe; print(rlpipe.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(site)), where  # the wheel's copy, not the checkout's

    listed = subprocess.run([sys.executable, "-m", "rlpipe", "--help"], cwd=elsewhere, env=env, capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0 and all(c in listed.stdout for c in ("train", "eval", "score", "filter"))

    run = subprocess.run(
        [sys.executable, "-m", "rlpipe", "train", "cluster=local", "rollout=hf", "algorithm=dapo",
         f"model.path={micro_model_dir}", "data.prompts_per_step=2", "rollout.samples_per_prompt=2",
         "rollout.max_response_tokens=8", "algorithm.overlong_buffer_tokens=4", "data.heldout_size=2",
         "trainer.total_steps=1",
         f"trainer.output_dir={tmp_path / 'run'}", "logger.progress_bar=false"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert (tmp_path / "run" / "summary.json").exists() and (tmp_path / "run" / "final_model" / "config.json").exists()
