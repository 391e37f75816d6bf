"""`launch/ray/submit.sh` against a real local Ray head: the short default job SUCCEEDS and writes its outputs."""

import json
import subprocess
import sys

import pytest

from conftest import REPO
from ray_cluster import PrivateRayHead

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("default_model")]


def test_ray_job_submit_runs_the_default_job(tmp_path):
    head = PrivateRayHead(num_cpus=4)
    try:
        out = tmp_path / "run"
        proc = subprocess.run(
            [str(REPO / "launch/ray/submit.sh"), "--address", head.dashboard, "--",
             "trainer.total_steps=2", "trainer.eval_every_steps=2", "data.heldout_size=32",
             f"trainer.output_dir={out}", "logger.progress_bar=false"],
            cwd=REPO, env=dict(head.env, RAY=head.ray, RLPIPE_PYTHON=sys.executable), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
        assert "SUCCEEDED" in proc.stdout + proc.stderr
        assert "joined Ray cluster" in proc.stdout + proc.stderr  # the job used the cluster, not a private instance
        summary = json.loads((out / "summary.json").read_text())
        assert summary["steps"] == 2
        assert (out / "metrics.jsonl").exists() and (out / "reward_curve.png").exists()
    finally:
        head.stop()
    assert not head.pids(), "Ray processes left behind"
