"""One TRL GRPOTrainer run on rlpipe's arithmetic task; writes per-step timings and held-out accuracy as jsonl.

Runs inside TRL's own virtual environment (bench/peers/.venv-trl, made by setup_trl.sh), never rlpipe's. rlpipe's
task and verifier modules are pure standard library: they are imported from the repository root so that TRL sees
exactly rlpipe's prompts (same stream, same order, same held-out set) and exactly rlpipe's rewards.

    bench/peers/.venv-trl/bin/python bench/peers/trl_grpo.py --model DIR --out run.jsonl --steps 20 --threads 2

Output rows (one JSON object per line, ``kind`` says which):
  meta   settings, versions, the first prompts as rendered, start-up time (process start -> first step start,
         the step-0 held-out evaluation excluded)
  eval   held-out greedy accuracy at step 0 and every --eval-every steps (own wall time ``eval_s``; excluded from steps)
  step   step, step_s (wall clock of the whole step: generation, scoring, reference logprobs, loss, backward,
         optimizer, TRL's logging), gen_s (model.generate), score_s (the rest of TRL's generation phase: decoding,
         rewards, advantages, reference logprobs), train_s (= step_s - gen_s - score_s), samples, generated_tokens,
         reward_mean, t_start / t_end (Unix time) and elapsed_s (seconds since this process started)
  samples  the first completions of step 1 with their verifier verdicts (to check decoding)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def process_start_time() -> float:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - psutil is a convenience; the import time is a close lower bound
        return time.time()


PROCESS_START = process_start_time()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="HF model directory (rlpipe's tiny model)")
    p.add_argument("--out", required=True, help="jsonl file to write")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (and OMP_NUM_THREADS)")
    p.add_argument("--prompts-per-step", type=int, default=32)
    p.add_argument("--samples-per-prompt", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--beta", type=float, default=0.001, help="KL coefficient (k3 in the loss); 0 = no reference")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--epsilon", type=float, default=0.2)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--loss-type", default="dapo", help="dapo = token mean over the whole batch (rlpipe token_mean)")
    p.add_argument("--data-seed", type=int, default=1234, help="rlpipe data.seed (held-out set uses seed + 1)")
    p.add_argument("--heldout-size", type=int, default=256)
    p.add_argument("--eval-every", type=int, default=10, help="held-out greedy accuracy every N steps (0 = never)")
    p.add_argument("--eval-max-new-tokens", type=int, default=None, help="default: --max-new-tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-prompt-tokens", type=int, default=256)
    p.add_argument("--workdir", default=None, help="TRL output_dir (nothing is saved there); default next to --out")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["MKL_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    sys.path.insert(0, str(REPO))  # rlpipe's stdlib-only task and verifier modules (not the rest of rlpipe)

    import torch

    torch.set_num_threads(args.threads)
    import datasets
    import transformers
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlpipe.tasks.arithmetic import TrainStream, heldout_set
    from rlpipe.verify.arithmetic import ArithmeticVerifier

    assert "vllm" not in sys.modules, "the TRL peer must not load vLLM"
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out = open(out_path, "w", encoding="utf-8")

    def write(row: dict) -> None:
        out.write(json.dumps(row) + "\n")
        out.flush()

    verifier = ArithmeticVerifier()
    tokenizer = AutoTokenizer.from_pretrained(args.model)

    # rlpipe's ArithmeticStream: TrainStream(seed=data.seed) excluding the held-out questions, in order.
    heldout = heldout_set(n=args.heldout_size, seed=args.data_seed + 1)
    stream = TrainStream(seed=args.data_seed, exclude={p.question for p in heldout})
    problems = [stream.next() for _ in range(args.steps * args.prompts_per_step)]
    train_dataset = datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": p.question}], "answer": str(p.answer), "uid": p.uid}
        for p in problems
    ])

    def render(question: str) -> str:
        return tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                             tokenize=False)

    too_long = [p.uid for p in problems[: args.prompts_per_step]
                if len(tokenizer(render(p.question), add_special_tokens=False)["input_ids"]) > args.max_prompt_tokens]
    if too_long:
        raise SystemExit(f"prompts longer than {args.max_prompt_tokens} tokens: {too_long[:3]}")

    stats = {"gen_s": 0.0, "score_s": 0.0, "generated_tokens": 0, "samples": 0, "rewards": []}
    first_samples: list[dict] = []

    def arithmetic_reward(prompts, completions, answer, **kwargs) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        rewards = [verifier.score(t, {"answer": a}).reward for t, a in zip(texts, answer)]
        stats["rewards"].extend(rewards)
        if not first_samples:
            for t, a, r in zip(texts[:8], answer[:8], rewards[:8]):
                first_samples.append({"completion": t, "answer": a, "reward": r,
                                      "verdict": verifier.score(t, {"answer": a}).kind.value})
        return rewards

    class TimedGRPOTrainer(GRPOTrainer):
        """Splits TRL's step: model.generate (gen_s), the rest of its generation phase (score_s), the rest."""

        def _generate_single_turn(self, prompt_ids, *a, **k):
            t0 = time.perf_counter()
            completion_ids, logprobs = super()._generate_single_turn(prompt_ids, *a, **k)
            stats["gen_s"] += time.perf_counter() - t0
            if self.model.training and "first_prompt_ids" not in stats:
                stats["first_prompt_ids"] = [list(map(int, x)) for x in prompt_ids[:: args.samples_per_prompt]]
            if self.model.training:
                stats["generated_tokens"] += sum(len(c) for c in completion_ids)
                stats["samples"] += len(completion_ids)
            return completion_ids, logprobs

        def _generate_and_score_completions(self, inputs):
            t0, gen_before = time.perf_counter(), stats["gen_s"]
            result = super()._generate_and_score_completions(inputs)
            stats["score_s"] += (time.perf_counter() - t0) - (stats["gen_s"] - gen_before)
            return result

    # ---- held-out greedy evaluation (own timing; rlpipe: temperature 0 on the 256 held-out problems) ----
    heldout_prompts = [tokenizer(render(p.question), add_special_tokens=False)["input_ids"] for p in heldout]
    eval_tokens = args.eval_max_new_tokens or args.max_new_tokens

    @torch.no_grad()
    def evaluate(model) -> dict:
        t0 = time.perf_counter()
        width = max(len(x) for x in heldout_prompts)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in heldout_prompts])
        attention_mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in heldout_prompts])
        was_training = model.training
        model.eval()
        generated = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                                   max_new_tokens=eval_tokens, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                                   temperature=None, top_p=None, top_k=None)
        if was_training:
            model.train()
        completions = generated[:, width:]
        texts, lengths = [], []
        for row in completions.tolist():
            if tokenizer.eos_token_id in row:
                row = row[: row.index(tokenizer.eos_token_id) + 1]
            row = [t for t in row if t != pad]
            lengths.append(len(row))
            texts.append(tokenizer.decode(row, skip_special_tokens=True))
        verdicts = [verifier.score(t, {"answer": str(p.answer)}) for t, p in zip(texts, heldout)]
        correct = sum(v.kind.value == "correct" for v in verdicts)
        return {"accuracy": correct / len(heldout), "correct": correct, "n": len(heldout),
                "format_rate": sum(v.kind.value != "parse_fail" for v in verdicts) / len(heldout),
                "response_len": sum(lengths) / len(lengths), "eval_s": time.perf_counter() - t0,
                "first_texts": texts[:3]}

    class StepRecorder(TrainerCallback):
        """Step k runs from the end of step k-1 (or of the step-0 evaluation) to TRL's on_step_end of step k; a
        held-out evaluation at a step's end is timed on its own and the next step starts after it."""

        def __init__(self):
            self.step_start = None
            self.trainer = None

        def _eval(self, step: int) -> float:
            result = evaluate(self.trainer.model)
            now = time.time()
            write({"kind": "eval", "step": step, "t_end": now, "elapsed_s": now - PROCESS_START, **result})
            return result["eval_s"]

        def on_train_begin(self, args_, state, control, **kwargs):
            eval_s = self._eval(0) if args.eval_every else 0.0
            self.step_start = time.time()
            write({"kind": "startup", "startup_s": self.step_start - PROCESS_START - eval_s, "eval0_s": eval_s,
                   "first_step_start": self.step_start, "process_start": PROCESS_START})

        def on_step_end(self, args_, state, control, **kwargs):
            now = time.time()
            step_s = now - self.step_start
            rewards = stats["rewards"]
            write({"kind": "step", "step": state.global_step, "step_s": step_s, "gen_s": stats["gen_s"],
                   "score_s": stats["score_s"], "train_s": step_s - stats["gen_s"] - stats["score_s"],
                   "samples": stats["samples"], "generated_tokens": stats["generated_tokens"],
                   "reward_mean": sum(rewards) / max(1, len(rewards)), "t_start": self.step_start, "t_end": now,
                   "elapsed_s": now - PROCESS_START})
            if state.global_step == 1:
                # What TRL actually fed model.generate (one row per prompt) and how it decoded the first completions.
                write({"kind": "samples", "step": 1, "prompt_ids": stats.get("first_prompt_ids"),
                       "samples": first_samples})
            stats.update(gen_s=0.0, score_s=0.0, generated_tokens=0, samples=0, rewards=[])
            if args.eval_every and (state.global_step % args.eval_every == 0 or state.global_step == args.steps):
                self._eval(state.global_step)
            self.step_start = time.time()  # the next step starts after the evaluation

    recorder = StepRecorder()

    config = GRPOConfig(
        output_dir=args.workdir or str(out_path.with_suffix("")) + "-trl",
        # batch: one generation batch of prompts_per_step x samples_per_prompt completions = one optimizer step
        per_device_train_batch_size=args.prompts_per_step * args.samples_per_prompt,
        gradient_accumulation_steps=1,
        num_generations=args.samples_per_prompt,
        steps_per_generation=1,
        num_iterations=1,
        max_steps=args.steps,
        shuffle_dataset=False,
        # sampling
        max_completion_length=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=0,
        repetition_penalty=1.0,
        use_vllm=False,
        # objective
        loss_type=args.loss_type,
        scale_rewards="group",
        epsilon=args.epsilon,
        epsilon_high=args.epsilon,
        beta=args.beta,
        use_bias_correction_kl=False,  # rlpipe's k3 KL term is not multiplied by the importance ratio
        importance_sampling_level="token",
        mask_truncated_completions=False,
        # optimizer: AdamW, constant learning rate, no warm-up
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        optim="adamw_torch",
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        weight_decay=0.0,
        max_grad_norm=args.max_grad_norm,
        # precision / device / overheads
        bf16=False,
        fp16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        seed=args.seed,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        dataloader_num_workers=0,
        log_completions=False,
    )
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    trainer = TimedGRPOTrainer(model=model, reward_funcs=[arithmetic_reward], args=config,
                               train_dataset=train_dataset, processing_class=tokenizer, callbacks=[recorder])
    recorder.trainer = trainer
    write({
        "kind": "meta",
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
                     "datasets": datasets.__version__},
        "threads": torch.get_num_threads(),
        "args": vars(args),
        "eos_token_ids": trainer.eos_token_ids,
        "loss_type": trainer.loss_type,
        "scale_rewards": trainer.scale_rewards,
        "generation_config": {k: v for k, v in trainer.generation_config.to_dict().items()
                              if k in ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k",
                                       "eos_token_id", "pad_token_id")},
        "first_prompts": [render(p.question) for p in problems[:3]],
        "first_uids": [p.uid for p in problems[: args.prompts_per_step]],
        "parameters": sum(p.numel() for p in model.parameters()),
    })
    trainer.train()
    write({"kind": "done", "elapsed_s": time.time() - PROCESS_START})
    out.close()


if __name__ == "__main__":
    main()
