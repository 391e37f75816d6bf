"""Off-policy correction: samples drawn by the rollout engine's policy π_behav (a stale policy version in
asynchronous RL, or the same weights computed by different kernels) trained under the learner's proximal policy
π_prox (its own logprobs of the same tokens, recomputed before the update).

Every mode reweights PPO's clipped surrogate, taken against π_prox, by the behaviour importance weight
w_t = π_prox(y_t) / π_behav(y_t) (detached), and may leave tokens or sequences out of the loss:

    L = − Σ_t m_t · w_t · min(r_t A, clip(r_t, 1−ε_low, 1+ε_high) A),   r_t = π_θ / π_prox

    none       w = 1, m = 1 (PPO as if the samples were the proximal policy's own)
    tis        truncated IS: w = min(ρ, C)                                      (token level: ρ = ρ_t;
               sequence level: ρ = exp Σ_t log ρ_t, the same w for every token of a response)
    mis        masked IS: w = ρ, m = 1[1/C ≤ ρ ≤ C]; a masked token (or sequence) leaves the loss and its counts
    decoupled  AReaL's decoupled PPO objective (arXiv 2505.24298): w = ρ, m = 1[ρ ≤ C] (tokens only)

References: truncated IS for the rollout/learner mismatch (Yao et al., "Your efficient RL framework secretly brings
you off-policy RL training", 2025; verl, TRL, SkyRL, OpenRLHF); masked IS (Liu et al., "When speed kills stability",
2025); decoupled PPO (Fu et al., AReaL, arXiv 2505.24298).

Shapes: N samples, T response tokens. Log-probabilities are 0 where ``response_mask`` is False.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

CORRECTIONS = ("none", "tis", "mis", "decoupled")
LEVELS = ("token", "sequence")
_LOG_CLAMP = 20.0  # a log-ratio of 20 is a weight of 5e8: saturate instead of overflowing


class Correction(NamedTuple):
    weights: torch.Tensor  # [N, T] w_t (0 where not trained)
    keep_mask: torch.Tensor  # [N, T] bool: response tokens that stay in the loss
    limited: torch.Tensor  # [N, T] bool: tokens whose weight was truncated or that were masked out


def behaviour_log_ratio(proximal_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor,
                        response_mask: torch.Tensor) -> torch.Tensor:
    """log ρ_t = log π_prox − log π_behav, [N, T], 0 off the response (and clamped to ±20)."""
    log_ratio = (proximal_logprobs - behaviour_logprobs).clamp(-_LOG_CLAMP, _LOG_CLAMP)
    return log_ratio.masked_fill(~response_mask, 0.0)


def rollout_correction(mode: str, proximal_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor,
                       response_mask: torch.Tensor, *, threshold: float, level: str = "token") -> Correction:
    """The weights and mask of ``mode`` (see the module docstring).

    Args:
        proximal_logprobs: [N, T] the learner's logprobs of the sampled tokens (no grad).
        behaviour_logprobs: [N, T] the rollout engine's logprobs of the same tokens.
        response_mask: [N, T] bool.
        threshold: C > 1 (tis: the truncation; mis: the band [1/C, C]; decoupled: the cap).
        level: "token" or "sequence" (tis and mis; decoupled is token-level by definition).
    """
    if mode not in CORRECTIONS:
        raise ValueError(f"unknown rollout correction {mode!r}; valid: {', '.join(CORRECTIONS)}")
    if level not in LEVELS:
        raise ValueError(f"unknown correction level {level!r}; valid: {', '.join(LEVELS)}")
    if mode != "none" and threshold <= 1:
        raise ValueError(f"the importance-weight threshold must be > 1 (got {threshold})")
    mask = response_mask
    zero = torch.zeros_like(proximal_logprobs, dtype=torch.bool)
    if mode == "none":
        return Correction(mask.to(proximal_logprobs.dtype), mask.clone(), zero)
    log_ratio = behaviour_log_ratio(proximal_logprobs, behaviour_logprobs, mask)
    if level == "sequence" and mode != "decoupled":
        seq = log_ratio.sum(dim=1, keepdim=True).clamp(-_LOG_CLAMP, _LOG_CLAMP)  # [N, 1]
        log_ratio = seq.expand_as(log_ratio).masked_fill(~mask, 0.0)
    ratio = log_ratio.exp()
    if mode == "tis":
        limited = (ratio > threshold) & mask
        weights = ratio.clamp(max=threshold)
        keep = mask.clone()
    elif mode == "mis":
        inside = (ratio >= 1.0 / threshold) & (ratio <= threshold)
        keep = mask & inside
        limited = mask & ~inside
        weights = ratio
    else:  # decoupled
        keep = mask & (ratio <= threshold)
        limited = mask & ~keep
        weights = ratio
    return Correction(weights * keep, keep, limited)


def mismatch_k3(learner_logprobs: torch.Tensor, engine_logprobs: torch.Tensor,
                response_mask: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate [N, T] of KL(π_engine ‖ π_learner) from the engine's samples: with
    log r = log π_learner − log π_engine, k3 = r − 1 − log r ≥ 0 (Schulman 2020); 0 off the response. Its token
    mean is the mismatch figure peers gate their CI on."""
    log_r = (learner_logprobs - engine_logprobs).clamp(-_LOG_CLAMP, _LOG_CLAMP)
    return (log_r.exp() - 1 - log_r).masked_fill(~response_mask, 0.0)
