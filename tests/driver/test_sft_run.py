"""``rlpipe sft`` end to end on real parts (Ray actors, FSDP2 ranks, vLLM and the verifier for held-out accuracy):
a file mixing TRL's three row formats trains and exports a model vLLM loads; and a run SIGKILLed after a checkpoint
resumes exactly, across epoch boundaries of the row pool that fall inside a step."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow
MICRO = ["model.tiny.size=micro", "logger.progress_bar=false", "data.heldout_size=16", "sft.lr=1e-2"]


def _rows(n):
    rows = []
    for i in range(n):
        a, b = 10 + i % 20, i % 7
        question = f"Compute {a} + {b}."
        answer = f"{a} + {b} = {a + b}.\n\nThe answer is \\boxed{{{a + b}}}."
        kind = i % 3
        if kind == 0:
            rows.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
        elif kind == 1:
            rows.append({"prompt": [{"role": "user", "content": question}],
                         "completion": [{"role": "assistant", "content": answer}]})
        else:
            rows.append({"text": f"{question} {answer}"})
    return rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_sft_trains_every_format_evaluates_and_exports(tmp_path):
    data = _write(tmp_path / "mixed.jsonl", _rows(60))
    run_dir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "rlpipe.cli", "sft", f"sft.train_file={data}", "sft.heldout_rows=12",
                          "sft.rows_per_step=8", "sft.total_steps=12", "sft.eval_every_steps=6",
                          f"trainer.output_dir={run_dir}", *MICRO], cwd=REPO, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    rows = _metrics(run_dir)
    evals = [r for r in rows if "eval/loss" in r]
    assert [r["step"] for r in evals] == [0, 6, 12]
    assert evals[-1]["eval/loss"] < 0.8 * evals[0]["eval/loss"]  # it learns the rows
    assert all("eval/accuracy" in r for r in evals)  # greedy held-out accuracy through vLLM and the verifier
    steps = [r for r in rows if "sft/loss" in r]
    assert len(steps) == 12 and all(r["sft/rows"] == 8 for r in steps)
    assert steps[-1]["actor/lr"] < steps[0]["actor/lr"]  # the cosine decay
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stage"] == "sft" and summary["heldout_loss_final"] == evals[-1]["eval/loss"]
    assert (run_dir / "final_model" / "config.json").is_file()


def test_sft_sigkill_then_resume_matches_the_uninterrupted_run(tmp_path):
    # 20 rows, 8 per step: epochs end inside steps 3, 5, 8 ...
    data = _write(tmp_path / "rows.jsonl", _rows(24))
    common = [f"sft.train_file={data}", "sft.heldout_rows=4", "sft.rows_per_step=8", "sft.total_steps=8",
              "sft.eval_every_steps=100", "sft.eval_accuracy=false", "trainer.save_every_steps=4", *MICRO]

    def cmd(run_dir):
        return [sys.executable, "-m", "rlpipe.sft", f"trainer.output_dir={run_dir}", *common]

    straight = tmp_path / "straight"
    subprocess.run(cmd(straight), cwd=REPO, check=True, capture_output=True, timeout=900)
    crashed = tmp_path / "crashed"
    proc = subprocess.Popen(cmd(crashed), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    while not (crashed / "checkpoints" / "step_000004" / "manifest.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended or hung before its first checkpoint"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run(cmd(crashed), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    a = {r["step"]: r for r in _metrics(straight) if "sft/loss" in r}
    b = {r["step"]: r for r in _metrics(crashed) if "sft/loss" in r}
    assert sorted(b) == list(range(1, 9))
    for step in range(5, 9):
        for key in ("sft/loss", "actor/grad_norm", "sft/trained_tokens", "actor/lr"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-5, abs=1e-7), (step, key)
    final = {d: [r["eval/loss"] for r in _metrics(d) if "eval/loss" in r][-1] for d in (straight, crashed)}
    assert final[crashed] == pytest.approx(final[straight], rel=1e-5)
