"""How per-token losses become one scalar, and the data-parallel / micro-batch corrections.

With global counts (over every micro-batch of every rank of the mini-batch) the local value is

    token_mean:               Σ_{local i,t} l_it / num_global_tokens                       × dp_size
    seq_mean_token_mean:      Σ_{local i} (Σ_t l_it / T_i) / num_global_seqs               × dp_size
    seq_mean_token_sum_norm:  Σ_{local i} (Σ_t l_it / constant) / num_global_seqs          × dp_size

Summing the local values over micro-batches gives the rank's share; FSDP/DeepSpeed then AVERAGE gradients over
``dp_size`` ranks, which the ``× dp_size`` undoes — so the final gradient is that of the global loss computed on the
whole mini-batch at once. Without global counts (None) the local counts are used and dp_size should be 1.
"""

from __future__ import annotations

from typing import Optional

import torch

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


def aggregate_loss(
    per_token_loss: torch.Tensor,
    response_mask: torch.Tensor,
    mode: str,
    *,
    num_global_tokens: Optional[int] = None,
    num_global_seqs: Optional[int] = None,
    dp_size: int = 1,
    constant: Optional[float] = None,
) -> torch.Tensor:
    """Aggregate ``per_token_loss [N, T]`` over ``response_mask [N, T]`` (bool) into a scalar (see module docstring).

    Modes: "token_mean" (DAPO, arXiv 2503.14476 eq. 12), "seq_mean_token_mean" (the GRPO paper's equation, arXiv
    2402.03300 eq. 3), "seq_mean_token_sum_norm" (Dr.GRPO, arXiv 2503.20783: divide by a constant, e.g. the max
    response length). rlpipe's ``grpo`` preset uses "token_mean", not its paper's equation: a per-response mean gives
    each token of a short response more weight than a token of a long one (the length bias DAPO and Dr.GRPO
    describe), and the token mean is what verl's and TRL's GRPO default to. ``algorithm.loss_aggregation=
    seq_mean_token_mean`` gives the paper's form.
    """
    mask = response_mask.to(per_token_loss.dtype)
    masked = per_token_loss * mask
    if mode == "token_mean":
        denom = num_global_tokens if num_global_tokens is not None else mask.sum().clamp(min=1)
        return masked.sum() / denom * dp_size
    seq_tokens = mask.sum(dim=1)  # [N]
    if mode == "seq_mean_token_mean":
        per_seq = masked.sum(dim=1) / seq_tokens.clamp(min=1)
    elif mode == "seq_mean_token_sum_norm":
        if constant is None:
            raise ValueError("seq_mean_token_sum_norm needs `constant` (e.g. the max response length)")
        per_seq = masked.sum(dim=1) / constant
    else:
        raise ValueError(f"unknown loss aggregation {mode!r}; valid: {', '.join(AGGREGATIONS)}")
    denom = num_global_seqs if num_global_seqs is not None else (seq_tokens > 0).sum().clamp(min=1)
    return per_seq.sum() / denom * dp_size
