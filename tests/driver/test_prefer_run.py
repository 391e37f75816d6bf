"""``rlpipe prefer`` end to end on real parts: DPO on a file of TRL-format pairs (plain, conversational and
implicit-prompt rows), with a frozen reference on two FSDP2 ranks; and online pairs built from the policy's own vLLM
samples scored by the verifier, the new weights pushed to the engine every step."""

import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow
MICRO = ["model.tiny.size=micro", "model.tiny.warmstart_steps=0", "logger.progress_bar=false",
         "data.heldout_size=16"]


def _pairs(n):
    rows = []
    for i in range(n):
        a, b = 10 + i % 20, i % 7
        question, right, wrong = f"Compute {a} + {b}.", f"The answer is {a + b}.", f"The answer is {a + b + 10}."
        user = [{"role": "user", "content": question}]
        if i % 4 == 3:  # TRL's implicit prompt: whole conversations, split where they differ
            rows.append({"chosen": user + [{"role": "assistant", "content": right}],
                         "rejected": user + [{"role": "assistant", "content": wrong}]})
        elif i % 2:
            rows.append({"prompt": user, "chosen": [{"role": "assistant", "content": right}],
                         "rejected": [{"role": "assistant", "content": wrong}]})
        else:
            rows.append({"prompt": question, "chosen": " " + right, "rejected": " " + wrong})
    return rows


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_dpo_on_a_pair_file(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _pairs(40)))
    run_dir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "rlpipe.cli", "prefer", f"prefer.train_file={data}",
                          "prefer.heldout_rows=8", "prefer.pairs_per_step=8", "prefer.total_steps=8",
                          "prefer.eval_every_steps=4", "prefer.lr=2e-3", "prefer.eval_accuracy=false",
                          f"trainer.output_dir={run_dir}", *MICRO], cwd=REPO, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    rows = _metrics(run_dir)
    evals = [r for r in rows if "eval/loss" in r]
    assert [r["step"] for r in evals] == [0, 4, 8]
    assert evals[0]["eval/loss"] == pytest.approx(0.6931, abs=1e-3)  # policy = reference: −log σ(0)
    assert evals[-1]["eval/loss"] < evals[0]["eval/loss"] - 0.05
    assert evals[-1]["eval/rewards_accuracy"] > 0.5
    steps = [r for r in rows if "prefer/loss" in r and r["step"] > 0]
    assert len(steps) == 8 and all(r["prefer/pairs"] == 8 for r in steps)
    assert (run_dir / "final_model" / "config.json").is_file()


def test_online_pairs_from_scored_rollouts(tmp_path):
    run_dir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "rlpipe.prefer", "prefer.loss=simper", "prefer.total_steps=3",
                          "prefer.prompts_per_step=8", "prefer.samples_per_prompt=4", "prefer.eval_every_steps=3",
                          "rollout.max_response_tokens=16", f"trainer.output_dir={run_dir}", *MICRO], cwd=REPO,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    rows = {r["step"]: r for r in _metrics(run_dir)}
    assert "eval/accuracy" in rows[0] and "eval/accuracy" in rows[3]
    for step in (1, 2, 3):
        r = rows[step]
        # every prompt is accounted for: a pair (wrong or longer rejected) or a counted reason for none
        reasons = sum(r.get(f"prefer/{k}", 0) for k in ("wrong_rejected", "longer_rejected", "no_correct",
                                                         "no_rejected"))
        assert r["prefer/groups"] == 8 and reasons == 8
        assert r["prefer/pairs"] == r.get("prefer/wrong_rejected", 0) + r.get("prefer/longer_rejected", 0)
