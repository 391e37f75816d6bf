"""Learner tokens/s on a long-tailed length distribution: padded micro-batches against token budgets and packing.

    .venv/bin/python bench/packing.py [--size medium] [--rounds 2] [--threads 1]

One learner rank (the real ``LearnerRank``: gloo group of one, FSDP2, KL to a reference, GRPO loss) runs
``prepare`` (reference forward) + ``update`` (forward, backward, AdamW) on the same step of samples, once per layout,
interleaved over ``--rounds`` rounds; prints the median seconds and real tokens per second (prompt + response tokens
of the samples, the same for every layout), and each layout's speed over the padded path's, measured in this run.

Samples: 8 prompts (15-40 tokens) x 8 responses; each response at the cap (256 tokens) with probability 0.15, else
8-48 tokens (seed 0: 5 of 64 at the cap, median 29), as RL responses are when a few ramble to the length limit. Layouts:

- ``padded``: ``micro_batch_samples=64``, ``packing=none`` (rlpipe before token budgets: each micro-batch padded to
  its longest sample, rows sorted by length);
- ``padded+budget``: ``max_tokens_per_micro_batch=4096``, ``packing=none``;
- ``sequences``: packed, one padding-free stream per micro-batch, budget 4096;
- ``shared_prefix``: packed, each prompt once, budget 4096 (the default).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LAYOUTS = {  # name -> (packing, max_tokens_per_micro_batch)
    "padded": ("none", None),
    "padded+budget": ("none", 4096),
    "sequences": ("sequences", 4096),
    "shared_prefix": ("shared_prefix", 4096),
}


def samples(seed: int = 0, prompts: int = 8, per_prompt: int = 8, cap: int = 256):
    rng = random.Random(seed)
    prompt_ids = [[rng.randrange(3, 300) for _ in range(rng.randint(15, 40))] for _ in range(prompts)]
    index, responses = [], []
    for k in range(prompts):
        for _ in range(per_prompt):
            length = cap if rng.random() < 0.15 else rng.randint(8, 48)
            index.append(k)
            responses.append([rng.randrange(3, 300) for _ in range(length)])
    advantages = [rng.gauss(0.0, 1.0) for _ in responses]
    return prompt_ids, index, responses, advantages


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="medium", help="tiny model size (rlpipe.models.tiny): tiny | medium")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    import torch

    from rlpipe.learner.batch import SampleShard
    from rlpipe.learner.objective import GlobalCounts, ObjectiveSettings
    from rlpipe.learner.rank import CorrectionSettings, LearnerRank, OptimizerSettings, free_port_address
    from rlpipe.models.tiny import build_tiny_model

    torch.set_num_threads(args.threads)
    model_dir = build_tiny_model(Path(tempfile.mkdtemp(prefix="rlpipe-packing-")) / "model", size=args.size)
    objective = ObjectiveSettings(policy_loss="ppo_clip", clip_low=0.2, clip_high=0.28, dual_clip=None,
                                  loss_aggregation="token_mean", loss_constant=None, kl_coef=0.001, kl_estimator="k3",
                                  kl_level="token", kl_in_loss=True, entropy_coef=0.0, temperature=1.0)
    prompt_ids, index, responses, advantages = samples()
    n = len(responses)
    real_tokens = sum(len(prompt_ids[k]) + len(r) for k, r in zip(index, responses))
    shard = SampleShard.build(prompts=prompt_ids, prompt_index=index, responses=responses,
                              logprobs=[[-1.0] * len(r) for r in responses], loss_mask=[True] * n, minibatch=[0] * n,
                              outcome=[0.0] * n, format_ok=[True] * n)
    counts = [GlobalCounts.of_lengths(shard.response_lengths, shard.loss_mask, 1)]
    addr, port = free_port_address()
    rank = LearnerRank(rank=0, world_size=1, master_addr=addr, master_port=port, model_path=str(model_dir),
                       backend="fsdp2", optimizer=OptimizerSettings(1e-6, (0.9, 0.999), 0.0, 1.0),
                       objective=objective, micro_batch_samples=64, with_reference=True, seed=0, dtype="float32",
                       backend_options={}, dist_timeout_s=600.0, old_logprobs="rollout",
                       correction=CorrectionSettings("none", 2.0, "token"))
    times: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    micro_batches: dict[str, int] = {}
    lengths = [len(r) for r in responses]
    print(f"{args.size} model, {n} samples, {real_tokens} real tokens; responses: median "
          f"{statistics.median(lengths)}, max {max(lengths)}, {sum(x == max(lengths) for x in lengths)} at the cap")
    def run(name: str) -> float:
        rank.packing, rank.max_tokens_per_micro_batch = LAYOUTS[name]
        start = time.perf_counter()
        rank.prepare(shard)
        micro_batches[name] = len(rank._prepared[0])
        rank.update(torch.tensor(advantages), counts)
        return time.perf_counter() - start

    run("shared_prefix")  # warm-up: first-call costs (allocator, FSDP lazy init) are not counted
    for _ in range(args.rounds):
        for name in LAYOUTS:
            times[name].append(run(name))
    rank.shutdown()
    base = statistics.median(times["padded"])
    print(f"\n| layout | micro-batches | s (median of {args.rounds}) | real tokens/s | × padded |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        t = statistics.median(values)
        print(f"| {name} | {micro_batches[name]} | {t:.2f} | {real_tokens / t:,.0f} | {base / t:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
