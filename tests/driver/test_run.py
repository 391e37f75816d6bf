"""A whole `rlpipe train` run in local mode (one process, the HF engine, the micro model): what the user sees."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.component


def _train(micro_model_dir, run, steps: int):
    return subprocess.run(
        [sys.executable, "-m", "rlpipe", "train", "cluster=local", "rollout=hf", f"model.path={micro_model_dir}",
         "data.prompts_per_step=2", "rollout.samples_per_prompt=2", "rollout.max_response_tokens=8",
         "data.heldout_size=4", f"trainer.total_steps={steps}", "trainer.eval_every_steps=2",
         f"trainer.output_dir={run}"], capture_output=True, text=True, timeout=600)


def test_progress_bar_shows_the_last_evaluation_between_evaluations_and_rows_carry_time(micro_model_dir, tmp_path):
    run = tmp_path / "run"
    proc = _train(micro_model_dir, run, 3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = re.findall(r"acc=([^\s,\]]+)", proc.stderr)
    assert shown and "nan" not in shown, shown  # before this fix: acc=nan on every step without an evaluation
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("time/elapsed_s" in r for r in rows)
    steps = [r for r in rows if r["step"] > 0]
    assert all(r["timing/step"] > 0 for r in steps)
    elapsed = [r["time/elapsed_s"] for r in rows]
    assert elapsed == sorted(elapsed)

    # A second, fresh run in the same directory (no checkpoint to resume) starts its rows afresh: before this fix its
    # rows were appended to the first run's, and its summary reported the first run's initial accuracy.
    again = _train(micro_model_dir, run, 2)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval/accuracy" in r] == [0, 2]
    assert sorted({json.loads(line)["step"] for line in (run / "ledger.jsonl").read_text().splitlines()}) == [1, 2]
