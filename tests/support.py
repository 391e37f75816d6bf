"""Builders tests share: a learner rank with explicit settings, and samples laid out as the driver sends them."""

from __future__ import annotations

from typing import Sequence

import torch

from rlpipe.learner.batch import SampleShard
from rlpipe.learner.objective import GlobalCounts, ObjectiveSettings
from rlpipe.learner.rank import CorrectionSettings, LearnerRank, OptimizerSettings


def objective(**overrides) -> ObjectiveSettings:
    """GRPO-like settings (the schema's defaults), with ``overrides``."""
    base = dict(policy_loss="ppo_clip", clip_low=0.2, clip_high=0.2, dual_clip=None, loss_aggregation="token_mean",
                loss_constant=None, kl_coef=0.0, kl_estimator="k3", kl_level="token", kl_in_loss=True,
                entropy_coef=0.0, temperature=1.0)
    return ObjectiveSettings(**{**base, **overrides})


def learner_rank(model_dir, port: int, *, rank: int = 0, world_size: int = 1, lr: float = 1e-3,
                 max_grad_norm: float = 0.0, backend: str = "fsdp2", backend_options=None, micro_batch_samples=8,
                 with_reference: bool = True, old_logprobs: str = "recompute", heads=(),
                 correction: CorrectionSettings = CorrectionSettings("none", 2.0, "token"),
                 max_tokens_per_micro_batch=None, packing: str = "none", lora=None, **objective_overrides):
    return LearnerRank(
        rank=rank, world_size=world_size, master_addr="127.0.0.1", master_port=port, model_path=str(model_dir),
        backend=backend, optimizer=OptimizerSettings(lr=lr, betas=(0.9, 0.999), weight_decay=0.0,
                                                     max_grad_norm=max_grad_norm),
        objective=objective(**objective_overrides), micro_batch_samples=micro_batch_samples,
        with_reference=with_reference, seed=0, dtype="float32", backend_options=backend_options or {},
        dist_timeout_s=300.0, old_logprobs=old_logprobs, correction=correction, heads=heads,
        max_tokens_per_micro_batch=max_tokens_per_micro_batch, packing=packing, lora=lora)


def shard(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
          logprobs: Sequence[Sequence[float]] | None = None, rows: Sequence[int] | None = None,
          minibatch: Sequence[int] | None = None, outcome: Sequence[float] | None = None) -> SampleShard:
    """Samples i in ``rows`` (default all; -1 = a padding row with no loss) as one rank's SampleShard."""
    rows = list(range(len(responses))) if rows is None else list(rows)
    logprobs = logprobs if logprobs is not None else [[0.0] * len(r) for r in responses]
    real = [i if i >= 0 else 0 for i in rows]
    return SampleShard.build(
        prompts=[prompts[i] for i in real], prompt_index=list(range(len(real))),
        responses=[responses[i] for i in real], logprobs=[logprobs[i] for i in real],
        loss_mask=[i >= 0 for i in rows], minibatch=list(minibatch) if minibatch is not None else [0] * len(rows),
        outcome=[outcome[i] if outcome is not None else 0.0 for i in real], format_ok=[True] * len(rows))


def counts(responses: Sequence[Sequence[int]], dp_size: int) -> GlobalCounts:
    lengths = torch.tensor([len(r) for r in responses])
    return GlobalCounts.of_lengths(lengths, torch.ones(len(responses), dtype=torch.bool), dp_size)
