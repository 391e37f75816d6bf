"""``rlpipe pipeline``: SFT then DPO, the second stage starting from the first one's export; a pipeline SIGKILLed in
its second stage resumes that stage from its last checkpoint, without redoing the first, and ends where an
uninterrupted pipeline ends."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def _files(tmp_path):
    sft, pairs = tmp_path / "sft.jsonl", tmp_path / "pairs.jsonl"
    sft_rows, pair_rows = [], []
    for i in range(24):
        a, b = 10 + i % 20, i % 7
        q = f"Compute {a} + {b}."
        sft_rows.append({"messages": [{"role": "user", "content": q},
                                      {"role": "assistant", "content": f"The answer is {a + b}."}]})
        pair_rows.append({"prompt": [{"role": "user", "content": q}],
                          "chosen": [{"role": "assistant", "content": f"The answer is {a + b}."}],
                          "rejected": [{"role": "assistant", "content": f"The answer is {a + b + 10}."}]})
    sft.write_text("".join(json.dumps(r) + "\n" for r in sft_rows))
    pairs.write_text("".join(json.dumps(r) + "\n" for r in pair_rows))
    return sft, pairs


def _cmd(run_dir, sft, pairs):
    return [sys.executable, "-m", "rlpipe.pipeline", "pipeline.stages=[sft,prefer]", f"trainer.output_dir={run_dir}",
            "model.tiny.size=micro", "logger.progress_bar=false", "data.heldout_size=16", "trainer.save_every_steps=4",
            f"sft.train_file={sft}", "sft.heldout_rows=4", "sft.rows_per_step=8", "sft.total_steps=4",
            "sft.eval_every_steps=4", "sft.lr=1e-2", "sft.eval_accuracy=false",
            f"prefer.train_file={pairs}", "prefer.heldout_rows=4", "prefer.pairs_per_step=8", "prefer.total_steps=8",
            "prefer.eval_every_steps=8", "prefer.lr=2e-3", "prefer.eval_accuracy=false"]


def _metrics(stage_dir):
    return {r["step"]: r for r in (json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines())}


def test_pipeline_killed_in_its_second_stage_resumes_it_without_redoing_the_first(tmp_path):
    sft, pairs = _files(tmp_path)
    straight = tmp_path / "straight"
    subprocess.run(_cmd(straight, sft, pairs), cwd=REPO, check=True, capture_output=True, timeout=900)
    pipeline = json.loads((straight / "pipeline.json").read_text())
    assert [s["stage"] for s in pipeline["stages"]] == ["1-sft", "2-prefer"]
    # the second stage started from the first one's export
    prefer_config = json.loads((straight / "2-prefer" / "config.json").read_text())
    assert prefer_config["model"]["path"] == str(straight / "1-sft" / "final_model")

    crashed = tmp_path / "crashed"
    proc = subprocess.Popen(_cmd(crashed, sft, pairs), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not (crashed / "2-prefer" / "checkpoints" / "step_000004" / "manifest.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the pipeline ended or hung before stage 2's checkpoint"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first_stage = (crashed / "1-sft" / "metrics.jsonl").stat().st_mtime_ns

    resumed = subprocess.run(_cmd(crashed, sft, pairs), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    log = resumed.stdout + resumed.stderr
    assert "stage 1 (sft) already finished" in log and "resumed from" in log
    assert "other settings" not in log  # the same command: nothing changed
    assert (crashed / "1-sft" / "metrics.jsonl").stat().st_mtime_ns == first_stage  # not redone
    a, b = _metrics(straight / "2-prefer"), _metrics(crashed / "2-prefer")
    assert sorted(b) == list(range(0, 9))
    for step in range(5, 9):
        for key in ("prefer/loss", "actor/grad_norm", "prefer/rewards_margin"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-5, abs=1e-7), (step, key)
    assert b[8]["eval/loss"] == pytest.approx(a[8]["eval/loss"], rel=1e-5)
