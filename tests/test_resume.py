"""Exact resume: a run SIGKILLed after its step-k checkpoint and resumed produces the same metrics for the next
steps as an uninterrupted run with the same seed, across epoch boundaries of the prompt pool."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("default_model")]
# 16 prompts, 8 per step: every second step starts a new (reshuffled) epoch.
COMMON = ["data.pool_size=16", "data.prompts_per_step=8", "data.heldout_size=32", "trainer.eval_every_steps=100",
          "trainer.save_every_steps=3", "logger.progress_bar=false", "trainer.seed=5"]
KEYS = ("rollout/reward_mean", "actor/pg_loss", "actor/grad_norm", "actor/kl", "rollout/response_len")


def _cmd(run_dir, steps):
    return [sys.executable, "-m", "rlpipe.train", f"trainer.output_dir={run_dir}", f"trainer.total_steps={steps}",
            *COMMON]


def _metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if "rollout/reward_mean" in r}


def test_sigkill_then_resume_matches_the_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(_cmd(straight, 6), cwd=REPO, check=True, capture_output=True, timeout=900)

    crashed = tmp_path / "crashed"
    proc = subprocess.Popen(_cmd(crashed, 6), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    while not (crashed / "checkpoints" / "step_000003" / "manifest.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended or hung before its first checkpoint"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and every process it started (local Ray instance, actors)
    proc.wait()

    resumed = subprocess.run(_cmd(crashed, 6), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stdout + resumed.stderr  # Hydra logs to stdout
    a, b = _metrics(straight), _metrics(crashed)
    assert sorted(b) == [1, 2, 3, 4, 5, 6]  # rows logged after the checkpoint by the killed run were replaced
    for step in (4, 5, 6):
        for key in KEYS:
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-4, abs=1e-6), (step, key)
