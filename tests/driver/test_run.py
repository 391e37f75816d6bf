"""A whole `rlpipe train` run in local mode (one process, the HF engine, the micro model): what the user sees."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.component


def test_progress_bar_shows_the_last_evaluation_between_evaluations_and_rows_carry_time(micro_model_dir, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "rlpipe", "train", "cluster=local", "rollout=hf", f"model.path={micro_model_dir}",
         "data.prompts_per_step=2", "rollout.samples_per_prompt=2", "rollout.max_response_tokens=8",
         "data.heldout_size=4", "trainer.total_steps=3", "trainer.eval_every_steps=2", f"trainer.output_dir={run}"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = re.findall(r"acc=([^\s,\]]+)", proc.stderr)
    assert shown and "nan" not in shown, shown  # before this fix: acc=nan on every step without an evaluation
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("time/elapsed_s" in r for r in rows)
    steps = [r for r in rows if r["step"] > 0]
    assert all(r["timing/step"] > 0 for r in steps)
    elapsed = [r["time/elapsed_s"] for r in rows]
    assert elapsed == sorted(elapsed)
