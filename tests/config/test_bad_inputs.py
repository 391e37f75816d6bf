"""Bad input, tried as a new user would, through the real command line: every case exits non-zero with a short
message naming the field or file, no Python traceback, and nothing started (no Ray, no actor).

Each case is one `python -m rlpipe ...` process; they run two at a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.component


def _files(tmp, micro_model_dir):
    """Data, tables, checkpoints and model directories that are wrong in one way each."""
    good = tmp / "good.jsonl"
    good.write_text("".join(json.dumps({"question": f"What is {i}+1?", "answer": f"#### {i + 1}"}) + "\n"
                            for i in range(40)))
    (tmp / "malformed.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n{not json\n')
    (tmp / "no_answer.jsonl").write_text(json.dumps({"question": "1+1?"}) + "\n")
    (tmp / "empty.jsonl").write_text("")
    (tmp / "broken.json").write_text("[{")
    (tmp / "rows.csv").write_text("question,answer\n")
    (tmp / "bad.parquet").write_bytes(b"PAR1 not really")
    (tmp / "notes.txt").write_text("a file where a directory belongs")
    (tmp / "rates_bad.jsonl").write_text("{not json\n")
    (tmp / "rates_other_pool.jsonl").write_text(json.dumps({"uid": "someone-else", "pass_rate": 0.5}) + "\n")
    (tmp / "rates_no_fields.jsonl").write_text(json.dumps({"prompt": "x"}) + "\n")
    (tmp / "not_a_checkpoint").mkdir()
    (tmp / "empty_model").mkdir()
    broken_model = tmp / "broken_model"
    broken_model.mkdir()
    for f in micro_model_dir.iterdir():
        if f.name != "config.json":
            (broken_model / f.name).write_bytes(f.read_bytes())
    (broken_model / "config.json").write_text("{ this is not json")
    ckpts = tmp / "ckpts" / "step_000002"
    ckpts.mkdir(parents=True)
    (ckpts / "manifest.json").write_text(json.dumps({"step": 2, "files": {"driver.pt": {"bytes": 5, "sha256": "0"}}}))
    return good


def _cases(tmp, model):
    good = tmp / "good.jsonl"
    gsm = ["data=gsm8k", f"data.file={good}", "data.heldout_size=8"]
    cases = [
        # --- composition: keys, groups, types (Hydra's own messages) ---
        (["train", "trainer.total_stepz=3"], "total_stepz"),
        (["train", "algorithm=dapoo"], "dapoo"),
        (["train", "trainer.total_steps=abc"], "total_steps"),
        (["train", "rollout.samples_per_prompt=1.5"], "samples_per_prompt"),
        (["train", "data=gsm8k"], "data.file"),  # a file preset without its file
        # --- field values ---
        (["train", "algorithm.clip_low=2"], "algorithm.clip_low"),
        (["train", "algorithm.clip_high=-0.1"], "algorithm.clip_high"),
        (["train", "algorithm.dual_clip=0.5"], "algorithm.dual_clip"),
        (["train", "algorithm.kl_coef=-1"], "algorithm.kl_coef"),
        (["train", "algorithm.advantage=gpro"], "algorithm.advantage"),
        (["train", "algorithm.policy_loss=ppo"], "algorithm.policy_loss"),
        (["train", "algorithm.loss_aggregation=mean"], "algorithm.loss_aggregation"),
        (["train", "algorithm.kl_estimator=k4"], "algorithm.kl_estimator"),
        (["train", "algorithm.kl_in=advantage"], "algorithm.kl_in"),
        (["train", "algorithm.old_logprobs=engine"], "algorithm.old_logprobs"),
        (["train", "algorithm.old_logprobs=rollout", "model.dtype=bfloat16"], "algorithm.old_logprobs"),
        (["train", "algorithm.overlong_buffer_tokens=64"], "algorithm.overlong_buffer_tokens"),
        (["train", "algorithm.max_generation_rounds=0"], "algorithm.max_generation_rounds"),
        (["train", "algorithm.reference_reset.interval_steps=5", "algorithm.kl_coef=0"], "reference_reset"),
        (["train", "model.lora.rank=-4"], "model.lora.rank"),
        (["train", "model.score_head.enabled=true", "model.score_head.kind=wide"], "model.score_head.kind"),
        (["train", "model.score_head.enabled=true", "model.score_head.kind=dense", "model.score_head.pooling=max"],
         "model.score_head.pooling"),
        (["train", "model.score_head.enabled=true", "model.score_head.kind=dense",
          "model.score_head.features=[hidden,attention]"], "model.score_head.features"),
        (["train", "model.lora.rank=8", "model.lora.alpha=0"], "model.lora.alpha"),
        (["train", "model.lora.rank=8", "algorithm.reference_reset.interval_steps=5"], "model.lora"),
        (["train", "model.lora.rank=8", "model.lora.target_modules=[]"], "model.lora.target_modules"),
        (["train", "algorithm.length_penalty=linear"], "algorithm.length_penalty"),
        (["train", "rollout.samples_per_prompt=1"], "rollout.samples_per_prompt"),
        (["train", "rollout.temperature=0"], "rollout.temperature"),
        (["train", "rollout.top_p=1.5"], "rollout.top_p"),
        (["train", "rollout.tools=[calculator]"], "rollout.environment"),
        (["train", "data=tool_arithmetic", "rollout.tools=[python]"], "lacks ['calculator']"),
        (["train", "data=tool_arithmetic", "rollout.tools=[calculator,abacus]"], "rollout.tools"),
        (["train", "data=tool_arithmetic", "rollout.max_turns=0"], "rollout.max_turns"),
        (["train", "data=tool_arithmetic", "rollout.environment=sandbox"], "rollout.environment"),
        (["train", "rollout.engine=vlm"], "rollout.engine"),
        (["train", "rollout.max_response_tokens=0"], "rollout.max_response_tokens"),
        (["train", "learner.lr=0"], "learner.lr"),
        (["train", "learner.betas=[0.9]"], "learner.betas"),
        (["train", "learner.backend=fsdp"], "learner.backend"),
        (["train", "learner=deepspeed", "learner.deepspeed.zero_stage=4"], "learner.deepspeed.zero_stage"),
        (["train", "learner.deepspeed.offload_optimizer=true"], "learner.deepspeed.offload_optimizer"),
        (["train", "learner.updates_per_step=100000"], "learner.updates_per_step"),
        (["train", "learner.micro_batch_samples=0"], "learner.micro_batch_samples"),
        (["train", "verifier.name=arithmetc"], "verifier.name"),
        (["train", "verifier.correct_reward=0"], "verifier.correct_reward"),
        (["train", "verifier.timeout_s=0"], "verifier.timeout_s"),
        (["train", "cluster.mode=locall"], "cluster.mode"),
        (["train", "cluster=local", "learner.num_workers=2"], "learner.num_workers"),
        (["train", "cluster.placement=shared"], "cluster.placement"),
        (["train", "logger.backends=[console,mlflow]"], "logger.backends"),
        (["train", "logger.wandb_mode=on"], "logger.wandb_mode"),
        (["train", "trainer.total_steps=0"], "trainer.total_steps"),
        (["train", "trainer.keep_checkpoints=0"], "trainer.keep_checkpoints"),
        (["train", "data.prompts_per_step=0"], "data.prompts_per_step"),
        (["train", "data.pool_size=4", "data.prompts_per_step=8"], "data.pool_size"),
        (["train", "data.sampler=random"], "data.sampler"),
        (["train", "data.sampler=curriculum"], "data.pool_size"),
        (["train", "data.pass_rate_min=0.9", "data.pass_rate_max=0.1", "data.pool_size=32"], "data.pass_rate_min"),
        (["train", f"data.file={good}"], "data.file"),  # a file given to the synthetic task is never read
        (["train", "model.dtype=float16"], "model.dtype"),
        (["eval", "eval.samples_per_prompt=0"], "eval.samples_per_prompt"),
        (["filter"], "data.pool_size"),  # the pre-pass needs a fixed pool
        # --- paths and files ---
        (["train", "model.path=/nonexistent/model"], "model.path"),
        (["train", f"model.path={tmp / 'empty_model'}"], "model.path"),
        (["train", f"model.path={tmp / 'notes.txt'}"], "model.path"),
        (["train", f"model.path={tmp / 'broken_model'}"], "model.path"),
        (["train", "trainer.resume=/nonexistent/checkpoint"], "trainer.resume"),
        (["train", f"trainer.resume={tmp / 'not_a_checkpoint'}"], "trainer.resume"),
        (["train", "trainer.resume=auto", f"trainer.checkpoint_dir={tmp / 'ckpts'}"], "trainer.resume"),
        (["train", f"trainer.output_dir={tmp / 'notes.txt'}"], "trainer.output_dir"),
        (["train", *gsm[:1], "data.file=/nonexistent.jsonl"], "data.file"),
        (["train", *gsm, f"data.heldout_file={tmp / 'missing.jsonl'}"], "data.heldout_file"),
        (["train", "data=gsm8k", f"data.file={tmp / 'malformed.jsonl'}"], "malformed.jsonl"),
        (["train", "data=gsm8k", f"data.file={tmp / 'no_answer.jsonl'}"], "no_answer.jsonl"),
        (["train", "data=gsm8k", f"data.file={tmp / 'empty.jsonl'}"], "no usable rows"),
        (["train", "data=gsm8k", f"data.file={tmp / 'broken.json'}"], "broken.json"),
        (["train", "data=gsm8k", f"data.file={tmp / 'rows.csv'}"], "rows.csv"),
        (["train", "data=gsm8k", f"data.file={tmp / 'bad.parquet'}"], "bad.parquet"),
        (["train", *gsm, "data.heldout_size=40"], "data.heldout_size"),
        (["train", *gsm, "data.prompts_per_step=64"], "data.prompts_per_step"),
        (["train", *gsm, "data.format=gsm9k"], "data.format"),
        (["train", *gsm, "verifier=arithmetic"], "verifier"),
        (["train", *gsm, "data.fields={prompt: query}"], "good.jsonl"),
        (["train", "data.pool_size=32", f"data.pass_rate_table={tmp / 'missing_rates.jsonl'}"], "pass_rate_table"),
        (["train", "data.pool_size=32", f"data.pass_rate_table={tmp / 'rates_bad.jsonl'}"], "pass_rate_table"),
        (["train", "data.pool_size=32", f"data.pass_rate_table={tmp / 'rates_other_pool.jsonl'}"], "pass_rate_table"),
        (["train", "data.pool_size=32", f"data.pass_rate_table={tmp / 'rates_no_fields.jsonl'}"], "pass_rate_table"),
        (["eval", "model.path=/nonexistent/model"], "model.path"),
        (["train", "data.max_prompt_tokens=500", "rollout.max_response_tokens=64"], "max_prompt_tokens"),
        (["score", "--verifier", "math", "--input", str(tmp / "missing.jsonl"), "--output", str(tmp / "o.jsonl")],
         "--input"),
        (["score", "--verifier", "math", "--input", str(good), "--output", "/nonexistent/dir/o.jsonl"], "--output"),
        (["score", "--verifier", "math", "--input", str(good), "--output", str(tmp / "o.jsonl"), "--option",
          "fallback=psychic"], "fallback"),
        (["score", "--verifier", "maths", "--input", str(good), "--output", str(tmp / "o.jsonl")], "--verifier"),
        (["trian"], "trian"),
        (["train", "--config-dir", str(tmp / "no_such_dir"), "--config-name", "mine"], "no_such_dir"),
    ]
    model_args = [f"model.path={model}"]
    out = []
    for argv, expect in cases:
        hydra = argv[0] in ("train", "eval", "filter")
        chosen_model = any(a.startswith("model.path=") for a in argv)
        own_dir = any(a.startswith("trainer.output_dir=") for a in argv)
        extra = ["logger.progress_bar=false"] + ([] if own_dir else [f"trainer.output_dir={tmp / 'runs' / str(len(out))}"])
        extra = extra if hydra else []
        out.append((argv + (model_args if hydra and not chosen_model else []) + extra, expect))
    return out


def _run(argv):
    proc = subprocess.run([sys.executable, "-m", "rlpipe", *argv], capture_output=True, text=True, timeout=300)
    return argv, proc


def test_bad_inputs_fail_with_one_clear_message(tmp_path, micro_model_dir):
    _files(tmp_path, micro_model_dir)
    cases = _cases(tmp_path, micro_model_dir)
    assert len(cases) >= 40
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda case: (_run(case[0]), case[1]), cases))
    problems = []
    for (argv, proc), expect in results:
        said = proc.stdout + proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        if proc.returncode == 0:
            problems.append(f"{argv}: exited 0")
        elif "Traceback" in said:
            problems.append(f"{argv}: printed a traceback:\n{said[-1500:]}")
        elif expect not in proc.stderr:
            problems.append(f"{argv}: the message does not name {expect!r}:\n{proc.stderr[-800:]}")
        elif len(lines) > 20:  # Hydra lists the valid options of a misspelt group: helpful, and no traceback
            problems.append(f"{argv}: {len(lines)} lines of stderr:\n{proc.stderr[-800:]}")
        elif "Ray" in said or "worker pids" in said:
            problems.append(f"{argv}: something started before the error:\n{said[-800:]}")
    assert not problems, "\n\n".join(problems)
