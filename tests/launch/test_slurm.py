"""A real single-node Slurm (slurmctld + slurmd + munge, started here on loopback) runs launch/slurm/rlpipe.sbatch:
Ray head inside the allocation, `ray job submit`, a short default job to completion, Ray torn down."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from ray_cluster import free_port
from slurm_cluster import PrivateSlurm, available

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("default_model"),
              pytest.mark.skipif(not available(), reason="needs root and Debian's slurm-wlm + munge (.ci installs them)")]


def test_sbatch_runs_a_short_job_to_completion(tmp_path):
    slurm = PrivateSlurm(Path("/tmp") / f"rlpipe-slurm-{tmp_path.name[-12:]}")
    try:
        out = tmp_path / "run"
        env = dict(slurm.env, RLPIPE_PYTHON=sys.executable, RAY=str(Path(sys.executable).with_name("ray")),
                   RLPIPE_HEAD_IP="127.0.0.1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
                   RLPIPE_RAY_PORT=str(free_port()), RLPIPE_DASHBOARD_PORT=str(free_port()),
                   RLPIPE_AGENT_PORT=str(free_port()), RLPIPE_RAY_CPUS="4")
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.run(
            ["sbatch", "--wait", "--nodes=1", f"--output={tmp_path}/slurm-%j.log", "launch/slurm/rlpipe.sbatch",
             "trainer.total_steps=2", "trainer.eval_every_steps=2", "data.heldout_size=32",
             f"trainer.output_dir={out}", "logger.progress_bar=false"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
        log = "\n".join(p.read_text() for p in tmp_path.glob("slurm-*.log"))
        assert proc.returncode == 0, proc.stderr + log[-5000:]
        assert "all nodes joined" in log and "SUCCEEDED" in log
        assert json.loads((out / "summary.json").read_text())["steps"] == 2
    finally:
        slurm.stop()
    job_id = re.search(r"Submitted batch job (\d+)", proc.stdout).group(1)
    leftover = subprocess.run(["pgrep", "-f", f"/tmp/rlpipe-ray-{job_id}"], capture_output=True, text=True).stdout
    assert not leftover.split(), f"Ray processes of job {job_id} left behind: {leftover}"
