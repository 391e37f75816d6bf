"""KL to the reference policy: per-token estimators, the KL loss (token or sequence level), KL in the reward.

Estimators of KL(π‖π_ref) from samples of π (J. Schulman, "Approximating KL divergence", 2020), with
log r = log π_ref − log π:  k1 = −log r,  k2 = ½ (log r)²,  k3 = r − 1 − log r  (unbiased and ≥ 0).
"""

from __future__ import annotations

from typing import Optional

import torch

from rlpipe.algos.aggregation import aggregate_loss

KL_ESTIMATORS = ("k1", "k2", "k3")
KL_LEVELS = ("token", "sequence")


def kl_estimate(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k3", clamp: Optional[float] = 10.0
) -> torch.Tensor:
    """Per-token KL estimate [N, T] from logprobs [N, T] and ref_logprobs [N, T]; clamped to ±clamp (as verl)."""
    log_ratio = ref_logprobs - logprobs  # log r
    if kind == "k1":
        kl = -log_ratio
    elif kind == "k2":
        kl = 0.5 * log_ratio.square()
    elif kind == "k3":
        # exp of a clamped log-ratio: one token with a tiny reference probability must not overflow to inf.
        log_ratio = log_ratio.clamp(-20.0, 20.0)
        kl = log_ratio.exp() - 1 - log_ratio
    else:
        raise ValueError(f"unknown KL estimator {kind!r}; valid: {', '.join(KL_ESTIMATORS)}")
    return kl.clamp(-clamp, clamp) if clamp is not None else kl


def kl_loss(
    kl: torch.Tensor,
    response_mask: torch.Tensor,
    level: str,
    *,
    mode: str = "token_mean",
    num_global_tokens: Optional[int] = None,
    num_global_seqs: Optional[int] = None,
    dp_size: int = 1,
    constant: Optional[float] = None,
) -> torch.Tensor:
    """The KL penalty term from per-token ``kl [N, T]``.

    level="token": aggregated like the policy loss (``mode`` and the global counts, see ``aggregate_loss``).
    level="sequence" (AGAPO, arXiv 2507.11407): each response's cumulative KL Σ_t kl_it, averaged over sequences —
    Σ_{local i} Σ_t kl_it / num_global_seqs × dp_size.
    """
    if level == "token":
        return aggregate_loss(kl, response_mask, mode, num_global_tokens=num_global_tokens,
                              num_global_seqs=num_global_seqs, dp_size=dp_size, constant=constant)
    if level == "sequence":
        mask = response_mask.to(kl.dtype)
        per_seq = (kl * mask).sum(dim=1)
        denom = num_global_seqs if num_global_seqs is not None else (mask.sum(dim=1) > 0).sum().clamp(min=1)
        return per_seq.sum() / denom * dp_size
    raise ValueError(f"unknown KL level {level!r}; valid: {', '.join(KL_LEVELS)}")


def sequence_kl(kl: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Each response's summed KL [N] from per-token ``kl [N, T]`` over ``response_mask [N, T]``."""
    return (kl * response_mask.to(kl.dtype)).sum(dim=1)


def kl_in_reward(rewards: torch.Tensor, seq_kl: Optional[torch.Tensor], coef: float) -> torch.Tensor:
    """KL in the reward (RLOO, arXiv 2402.14740 eq. 1): rewards [N] − coef × each response's summed KL
    ``seq_kl [N]`` (see ``sequence_kl``). ``coef`` 0 (KL in the loss, or none) leaves the rewards as they are."""
    if coef == 0 or seq_kl is None:
        return rewards
    return rewards - coef * seq_kl
