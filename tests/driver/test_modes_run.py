"""Modes end to end (local mode: the same step in one process): `rlpipe sft data.mode=mixed` on teacher traces
logs held-out accuracy, format and length per mode; `rlpipe eval` on its model prints the table per mode and
thinking budget, with every budgeted response within its budget (forced stops in the vLLM engine)."""

import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow
MICRO = ["model.tiny.size=micro", "logger.progress_bar=false", "cluster=local", "data.mode=mixed",
         "data.operations=[1,2]", "data.heldout_size=16"]


def test_mixed_sft_then_the_budget_sweep(tmp_path):
    run = tmp_path / "sft"
    out = subprocess.run([sys.executable, "-m", "rlpipe.cli", "sft", "sft.teacher_rows=800", "sft.rows_per_step=16",
                          "sft.total_steps=150", "sft.eval_every_steps=150", "sft.lr=1e-2", f"trainer.output_dir={run}",
                          *MICRO], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in rows if "eval/loss" in r][-1]
    for mode in ("reasoning", "non_reasoning"):
        assert f"eval/{mode}/accuracy" in final and f"eval/{mode}/format_rate" in final
    # the two modes answer differently: worked steps in a thought vs the answer alone
    assert final["eval/reasoning/response_len"] > 1.5 * final["eval/non_reasoning/response_len"]
    traces = [json.loads(line) for line in (run / "teacher_traces.jsonl").read_text().splitlines()]
    assert {r["mode"] for r in traces} == {"reasoning", "non_reasoning"}

    eval_dir = tmp_path / "eval"
    out = subprocess.run([sys.executable, "-m", "rlpipe.eval", f"model.path={run / 'final_model'}",
                          "eval.samples_per_prompt=4", "eval.pass_k=[1]", "eval.maj_k=[]", "eval.best_of=[]",
                          "eval.thinking_budgets=[2,6]", "rollout.answer_budget_tokens=12",
                          f"eval.output_dir={eval_dir}", *MICRO], cwd=REPO, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "by mode and thinking budget" in out.stdout
    table = json.loads((eval_dir / "eval.json").read_text())["by_mode_and_budget"]
    assert [(r["mode"], r["thinking_budget"]) for r in table] == [
        ("reasoning", None), ("reasoning", 6), ("reasoning", 2), ("non_reasoning", None)]
    for r in table:
        if r["thinking_budget"] is not None:
            assert r["over_budget"] == 0 and r["over_limit"] == 0  # checked per response
            assert r["max_tokens"] <= r["thinking_budget"] + 12
    assert table[2]["forced_stops"] > 0  # two thinking tokens are too few for any solution: the engine closed them
