"""What a score head adds to the policy's forward pass per candidate, as ``rlpipe eval`` measures it (the learner
rank's own timers: the forward, and each head's scoring plus the extras only it needs), on models of several sizes.

    .venv/bin/python bench/head_cost.py [--sizes tiny,medium] [--kind dense] [--rounds 5]

Candidates as in evaluation: 8 arithmetic prompts x 32 sampled-like responses (teacher traces of 3-4 steps, with
slips), packed with each prompt once, micro-batches of at most 64 samples. Weights are random for sizes without a
cached warm-start: the cost does not depend on them. The head's share of the FLOPs per token is printed beside it
(its weights touched per token against the backbone's), the cost a head of this shape would have with no per-call
overheads.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def candidates(tokenizer, prompts: int = 8, samples: int = 32, seed: int = 0):
    """(prompt ids per prompt, prompt index per sample, response ids per sample)."""
    rng = random.Random(seed)
    prompt_ids, index, responses = [], [], []
    for k in range(prompts):
        a, b, c, d = (rng.randint(2, 20) for _ in range(4))
        text = tokenizer.apply_chat_template([{"role": "user", "content": f"Compute {a} + {b} - {c} + {d}."}],
                                             add_generation_prompt=True, tokenize=False)
        prompt_ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        for _ in range(samples):
            slip = rng.choice([0, 0, 0, 1, -1])
            x, y = a + b, a + b - c + slip
            steps = [f"{a} + {b} = {x}.", f"{x} - {c} = {y}.", f"{y} + {d} = {y + d}."]
            if rng.random() < 0.3:
                steps.insert(1, f"Check: {a} + {b} = {x}.")
            response = "\n\n".join(steps) + f"\n\nThe answer is \\boxed{{{y + d}}}.<|im_end|>"
            index.append(k)
            responses.append(tokenizer(response, add_special_tokens=False)["input_ids"])
    return prompt_ids, index, responses


def measure(size: str, kind: str, rounds: int) -> dict:
    from transformers import AutoTokenizer

    from rlpipe.config.compose import load_config
    from rlpipe.driver.build import head_specs, model_dir
    from rlpipe.learner.batch import SampleShard
    from rlpipe.learner.objective import ObjectiveSettings
    from rlpipe.learner.rank import CorrectionSettings, LearnerRank, OptimizerSettings, free_port_address
    from rlpipe.models.tiny import build_tiny_model

    cfg = load_config(["model.score_head.enabled=true", f"model.score_head.kind={kind}"])
    path = (model_dir(cfg) if size == "tiny" else
            build_tiny_model(Path(tempfile.mkdtemp(prefix="rlpipe-headcost-")) / "model", size=size))
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    prompt_ids, index, responses = candidates(tokenizer)
    n = len(responses)
    shard = SampleShard.build(prompts=prompt_ids, prompt_index=index, responses=responses,
                              logprobs=[[-1.0] * len(r) for r in responses], loss_mask=[True] * n, minibatch=[0] * n,
                              outcome=[0.0] * n, format_ok=[True] * n)
    objective = ObjectiveSettings(policy_loss="ppo_clip", clip_low=0.2, clip_high=0.2, dual_clip=None,
                                  loss_aggregation="token_mean", loss_constant=None, kl_coef=0.0, kl_estimator="k3",
                                  kl_level="token", kl_in_loss=True, entropy_coef=0.0, temperature=1.0)
    addr, port = free_port_address()
    rank = LearnerRank(rank=0, world_size=1, master_addr=addr, master_port=port, model_path=str(path),
                       backend="fsdp2", optimizer=OptimizerSettings(1e-6, (0.9, 0.999), 0.0, 1.0),
                       objective=objective, micro_batch_samples=cfg.learner.micro_batch_samples,
                       max_tokens_per_micro_batch=cfg.learner.max_tokens_per_micro_batch, packing=cfg.learner.packing,
                       with_reference=False, seed=0, dtype="float32", backend_options={}, dist_timeout_s=600.0,
                       old_logprobs="rollout", correction=CorrectionSettings("none", 2.0, "token"),
                       heads=head_specs(cfg, str(path)))
    rank.prepare(shard)  # warm-up: first-call costs are not counted
    forward, head = [], []
    for _ in range(rounds):
        out = rank.prepare(shard)
        forward.append(1000 * float(out["forward_seconds"].sum()) / n)
        head.append(1000 * float(out["head_seconds"].sum()) / n)
    backbone = sum(p.numel() for p in rank.backend.module.parameters())
    head_params = sum(p.numel() for h in rank.heads for p in h.module.parameters())
    rank.shutdown()
    return {"size": size, "params": backbone, "head_params": head_params, "candidates": n,
            "forward_ms": statistics.median(forward), "head_ms": statistics.median(head)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,medium")
    ap.add_argument("--kind", default="dense", choices=["step", "dense", "both"])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rows = [measure(size, args.kind, args.rounds) for size in args.sizes.split(",")]
    print(f"\n{args.kind} head, {rows[0]['candidates']} candidates, median of {args.rounds} rounds, one thread\n")
    print("| model | parameters | forward ms / candidate | head ms / candidate | head ÷ forward "
          "| head weights ÷ backbone's |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['params'] / 1e6:.1f}M | {r['forward_ms']:.3f} | {r['head_ms']:.4f} | "
              f"{100 * r['head_ms'] / r['forward_ms']:.2f}% | {100 * r['head_params'] / r['params']:.2f}% |")


if __name__ == "__main__":
    main()
