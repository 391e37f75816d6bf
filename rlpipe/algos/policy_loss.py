"""Policy-gradient losses per token. Each returns ``(per_token_loss [N, T], metrics)``; masked tokens give 0.

``advantages`` is [N] (one per response, broadcast over tokens) or [N, T].
"""

from __future__ import annotations

from typing import Optional

import torch

from rlpipe.registry import Registry

POLICY_LOSSES: Registry = Registry("policy loss")
_LOG_RATIO_CLAMP = 20.0  # exp(20) ≈ 5e8: a runaway ratio saturates instead of overflowing to inf


def _per_token(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return advantages.unsqueeze(-1).expand_as(like) if advantages.dim() == 1 else advantages


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: Optional[float] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate (arXiv 1707.06347 eq. 7) with decoupled ε_low / ε_high (DAPO clip-higher, arXiv
    2503.14476 eq. 10) and optional dual clip (arXiv 1912.09729 eq. 5):

        ρ = exp(logπ − logπ_old),  l = −min(ρ A, clip(ρ, 1−ε_low, 1+ε_high) A)
        dual clip (A < 0 only):    l = min(l, −c A)

    Args: logprobs, old_logprobs [N, T]; advantages [N] or [N, T]; response_mask [N, T] bool.
    """
    mask = response_mask.to(logprobs.dtype)
    adv = _per_token(advantages, logprobs)
    ratio = (logprobs - old_logprobs).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP).exp()
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - clip_low, 1 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    clipped_tokens = clipped > unclipped
    if dual_clip is not None:
        if dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1 (got {dual_clip})")
        capped = torch.minimum(loss, -dual_clip * adv)
        loss = torch.where(adv < 0, capped, loss)
    loss = loss * mask
    metrics = {
        "clipfrac": _masked_mean(clipped_tokens.to(logprobs.dtype), mask).detach(),
        "ratio_mean": _masked_mean(ratio, mask).detach(),
        "ratio_max": (ratio * mask).max().detach(),
    }
    return loss, metrics


@POLICY_LOSSES.register("pg")
def pg_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    **_,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Policy gradient without ratio clipping (AGAPO, EXAONE 4.0 arXiv 2507.11407): l = −A·ρ.

    ∇l = −A·ρ·∇logπ, which at ρ = 1 (on-policy) is the REINFORCE gradient −A·∇logπ.
    """
    mask = response_mask.to(logprobs.dtype)
    ratio = (logprobs - old_logprobs).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP).exp()
    loss = -_per_token(advantages, logprobs) * ratio * mask
    return loss, {"ratio_mean": _masked_mean(ratio, mask).detach(), "ratio_max": (ratio * mask).max().detach()}


@POLICY_LOSSES.register("gspo")
def gspo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    **_,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO (arXiv 2507.18071, eqs. 5-7, token form eq. 13): a sequence-level ratio
    s_i = exp((1/|y_i|) Σ_t (logπ − logπ_old)), applied per token as s_it = sg[s_i]·exp(logπ_t − sg[logπ_t])
    (same value as s_i, gradient s_i·∇logπ_t / ... as in the paper), clipped PPO-style with tiny ε (3e-4 / 4e-4).
    Pair with seq_mean_token_mean aggregation, as the paper does.
    """
    mask = response_mask.to(logprobs.dtype)
    adv = _per_token(advantages, logprobs)
    seq_log_ratio = ((logprobs - old_logprobs) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)  # [N]
    seq_log_ratio = seq_log_ratio.clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    ratio = (seq_log_ratio.detach().unsqueeze(-1) + logprobs - logprobs.detach()).exp()  # [N, T], value s_i
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - clip_low, 1 + clip_high)
    loss = torch.maximum(unclipped, clipped) * mask
    metrics = {
        "clipfrac": _masked_mean((clipped > unclipped).to(logprobs.dtype), mask).detach(),
        "ratio_mean": _masked_mean(ratio, mask).detach(),
        "ratio_max": (ratio * mask).max().detach(),
    }
    return loss, metrics


def compute_policy_loss(name: str, logprobs, old_logprobs, advantages, response_mask, **options):
    """Look up ``name`` in POLICY_LOSSES and apply it. Returns (per_token_loss [N, T], metrics)."""
    return POLICY_LOSSES.get(name)(logprobs, old_logprobs, advantages, response_mask, **options)
