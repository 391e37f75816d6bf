"""Real runs of `python -m rlpipe.train`: real Ray actors, vLLM (CPU build), FSDP2 on gloo, the tiny warm-started
model (built on first use, then cached). Marked slow: minutes, not seconds."""

import json
import subprocess
import sys

import pytest

from conftest import DATA, REPO, needs_data

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("default_model")]


def _train(run_dir, *overrides, timeout=1500):
    proc = subprocess.run([sys.executable, "-m", "rlpipe.train", f"trainer.output_dir={run_dir}", *overrides],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return json.loads((run_dir / "summary.json").read_text()), rows, proc


def test_default_job_learns_with_a_smaller_budget(tmp_path):
    """The default job (GRPO, 2 FSDP2 ranks, vLLM rollout actor, verifier actor, reference) for 20 steps."""
    summary, rows, proc = _train(tmp_path, "trainer.total_steps=20", "trainer.eval_every_steps=10")
    for name in ("metrics.jsonl", "summary.json", "reward_curve.png", "final_model/config.json"):
        assert (tmp_path / name).exists(), name
    assert summary["steps"] == 20 and summary["wall_seconds"] > 0
    rewards = [r["rollout/reward_mean"] for r in rows if "rollout/reward_mean" in r]
    assert len(rewards) == 20
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    print(f"reward {first:.3f} -> {last:.3f}; accuracy {summary['eval_accuracy_initial']:.3f} -> "
          f"{summary['eval_accuracy_final']:.3f}")
    assert last > first + 0.05
    assert summary["eval_accuracy_final"] > summary["eval_accuracy_initial"] + 0.10
    # vLLM's logprobs match the learner's on every step: weights really were pushed in place.
    assert max(r["rollout/logprob_diff_max"] for r in rows if "rollout/logprob_diff_max" in r) < 1e-3
    assert "held-out accuracy (greedy)" in proc.stdout
    _exported_model_loads_and_answers(tmp_path / "final_model")


def _exported_model_loads_and_answers(model_dir):
    """The final policy in Hugging Face format loads with transformers and with vLLM, which agree greedily."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlpipe.rollout.types import GenerationRequest, SamplingSettings
    from rlpipe.rollout.vllm_engine import VLLMEngine

    tok = AutoTokenizer.from_pretrained(model_dir)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Compute 23 + 9 - 4."}], add_generation_prompt=True,
                                     tokenize=False)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    hf_ids = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=48,
                            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
    engine = VLLMEngine(str(model_dir), max_model_len=256, kv_cache_bytes=64 << 20)
    try:
        [out] = engine.generate([GenerationRequest("q", tuple(ids), 1, 0)], SamplingSettings.unforced(0.0, 1.0, 48))
    finally:
        engine.shutdown()  # this pytest process goes on to build learners, which need the default group free
    assert out.response_ids == hf_ids[: len(out.response_ids)]
    assert "\\boxed{" in out.text


def test_hf_engine_run_with_wandb_and_tensorboard(tmp_path):
    summary, rows, _ = _train(tmp_path, "rollout=hf", "trainer.total_steps=3", "trainer.eval_every_steps=3",
                              "data.heldout_size=32", "data.prompts_per_step=8", "logger=all")
    assert summary["steps"] == 3 and len([r for r in rows if "rollout/reward_mean" in r]) == 3
    assert list((tmp_path / "wandb").glob("offline-run-*")), "wandb offline run directory"
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*")), "tensorboard event file"


def test_local_mode_run(tmp_path):
    summary, rows, _ = _train(tmp_path, "cluster=local", "trainer.total_steps=3", "trainer.eval_every_steps=3",
                              "data.heldout_size=32", "data.prompts_per_step=8")
    assert summary["steps"] == 3 and summary["eval_accuracy_final"] is not None


def test_offline_prepass_table_is_consumed_by_training_with_dynamic_sampling(tmp_path):
    """`python -m rlpipe.filter` writes a pass-rate table for a pool; a DAPO run keeps the window and reports it."""
    table = tmp_path / "rates.jsonl"
    proc = subprocess.run([sys.executable, "-m", "rlpipe.filter", "data.pool_size=64", "prepass.samples_per_prompt=4",
                           f"prepass.output={table}", f"trainer.output_dir={tmp_path}/prepass"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    assert rows[0]["_meta"]["samples_per_prompt"] == 4 and rows[0]["_meta"]["model_path"]
    rates = [r["pass_rate"] for r in rows[1:]]
    assert len(rates) == 64 and all(0 <= r <= 1 for r in rates)
    expected_kept = sum(r <= 0.99 for r in rates)
    summary, metrics, proc = _train(tmp_path / "run", "algorithm=dapo", "data.pool_size=64",
                                    f"data.pass_rate_table={table}", "data.pass_rate_max=0.99",
                                    "trainer.total_steps=3", "trainer.eval_every_steps=3", "data.heldout_size=32")
    assert f"kept {expected_kept} of 64 prompts" in proc.stderr + proc.stdout
    steps = [m for m in metrics if "filter/rounds" in m]
    assert len(steps) == 3 and all(1 <= m["filter/rounds"] <= 4 for m in steps)
    assert all(0 <= m["filter/kept_frac"] <= 1 and "filter/zero_var_frac" in m for m in steps)




@needs_data
def test_math_verifier_on_a_data_set_file(tmp_path):
    """GSM8K rows through the math verifier, in local mode: the tiny model cannot solve them (reward 0 is expected);
    the point is the path: file loading (too-long prompts skipped and quarantined), math-verify scoring, training."""
    summary, rows, proc = _train(
        tmp_path, "data=gsm8k", f"data.file={DATA / 'gsm8k' / 'test.jsonl'}", "data.on_bad_row=skip",
        "data.max_prompt_tokens=384", "data.heldout_size=8", "data.prompts_per_step=4", "rollout.samples_per_prompt=2",
        "trainer.total_steps=2", "trainer.eval_every_steps=2", "cluster=local", "logger.progress_bar=false")
    assert summary["steps"] == 2
    steps = [r for r in rows if "verify/pass_rate" in r]
    assert all(r["verify/error_frac"] == 0 and r["verify/dropped"] == 0 for r in steps)
    quarantined = [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    assert quarantined and {q["reason"] for q in quarantined} == {"prompt_too_long"}


@needs_data
def test_code_verifier_on_a_code_data_set(tmp_path):
    """MBPP rows through the sandboxed code verifier: the tiny model writes no working Python (reward 0 expected);
    the point is the path, and that no sample is an infrastructure error (the sandbox started every time)."""
    summary, rows, proc = _train(
        tmp_path, "data=mbpp", f"data.file={DATA / 'mbpp' / 'mbpp.jsonl'}", "data.on_bad_row=skip",
        "data.max_prompt_tokens=448", "data.heldout_size=4", "data.prompts_per_step=4", "rollout.samples_per_prompt=2",
        "rollout.max_response_tokens=48", "trainer.total_steps=2", "trainer.eval_every_steps=2", "cluster=local",
        "logger.progress_bar=false")
    assert summary["steps"] == 2
    steps = [r for r in rows if "verify/pass_rate" in r]
    assert steps and all(r["verify/error_frac"] == 0 and r["verify/dropped"] == 0 for r in steps)


def test_score_heads_train_jointly_and_eval_reports_best_of_n(tmp_path):
    """XBai o4's step head and the dense head side by side through the real run (local mode) and `python -m
    rlpipe.eval` on the exported model: both are trained (their losses and AUROCs are logged), saved beside the HF
    weights, and drive the best-of-N table next to the policy's confidence, with their cost next to the forward."""
    run = tmp_path / "run"
    summary, rows, _ = _train(run, "model.score_head.enabled=true", "model.score_head.kind=both",
                              "model.score_head.lr=1e-3", "cluster=local", "trainer.total_steps=2",
                              "trainer.eval_every_steps=2", "data.heldout_size=16", "logger.progress_bar=false")
    for name in ("sprm", "dense_prm"):
        steps = [r for r in rows if f"{name}/loss" in r]
        assert len(steps) == 2 and all(0 < r[f"{name}/loss"] < 10 and 0 <= r[f"{name}/auroc"] <= 1 for r in steps)
    for file in ("score_head.pt", "score_head.json", "dense_score_head.pt", "dense_score_head.json"):
        assert (run / "final_model" / file).exists(), file
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, "-m", "rlpipe.eval", f"model.path={run / 'final_model'}", "cluster=local",
                           "data.heldout_size=16", "eval.samples_per_prompt=8", "eval.best_of=[2,8]",
                           "eval.budgets=[32,64]", f"eval.output_dir={out}"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "best-of-8   by step head" in proc.stdout and "best-of-8   by dense head" in proc.stdout
    assert "by policy confidence" in proc.stdout
    r = json.loads((out / "eval.json").read_text())
    assert r["prompts"] == 16 and r["samples_per_prompt"] == 8 and r["unscored_samples"] == 0
    assert set(r["best_of_n_by_confidence"]) == {"2", "8"} and set(r["best_of_n_by_min_logprob"]) == {"2", "8"}
    assert r["forward_ms_per_candidate"] > 0 and (out / "eval.png").exists()
    for prefix in ("head", "dense_head"):
        assert set(r[f"best_of_n_by_{prefix}"]) == {"2", "8"}
        for value in [*r["pass@k"].values(), *r[f"best_of_n_by_{prefix}"].values(), r[f"{prefix}_auroc"]]:
            assert 0.0 <= value <= 1.0
        # best-of-N picks one candidate per group, so it lies between the worst and the best a group could do
        assert r["pass@k"]["1"] <= r["pass@k"]["8"] and r[f"best_of_n_by_{prefix}"]["8"] <= r["pass@k"]["8"] + 1e-9
        assert r[f"{prefix}_ms_per_candidate"] > 0 and r[f"{prefix}_cost_frac_of_forward"] > 0
