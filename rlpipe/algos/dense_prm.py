"""A dense score head's pooling: per-token scores into step scores and a trajectory score (the pure parts).

XBai o4 / MetaStone-S1 (arXiv 2507.01951) score one position per reasoning step, the token before the step's
delimiter. On the default tiny model that position barely encodes whether the step was right (docs/sprm.md), while
the tokens where a slip was sampled are visible as low-probability tokens. The dense variant scores every response
token from the features the policy's forward pass already has there (the hidden state, the sampled token's logprob,
the most likely token's logprob; the distribution's entropy on request) and pools:

- a token t of trajectory i belongs to step k = the number of step ends strictly before t (``step_ids``); the
  tokens after the last step end form the last step;
- ``min``: step logit = the lowest token logit in the step, trajectory logit = the lowest step logit (one bad token
  condemns the trajectory);
- ``mean``: step logit = the mean over its tokens, trajectory logit = the mean over the steps;
- ``attention``: learned weights, softmax over the tokens of the step, ``step = Σ_t w_t s_t``; the trajectory
  pools the steps with weights ∝ Σ_{t ∈ step} exp(a_t), which equals one softmax over all its tokens.

Shapes: N trajectories, T response tokens, S steps (the most any trajectory has).
"""

from __future__ import annotations

import torch

POOLINGS = ("min", "mean", "attention")
# What the head may read per token: the hidden state, the sampled token's logprob, the most likely token's logprob
# (free: the logprobs' logsumexp and a max), the entropy (one more pass over the logits: ~1 % of a forward here).
FEATURES = ("hidden", "logprob", "top_logprob", "entropy")


def step_ids(step_end: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """The step each response token belongs to: the count of step ends strictly before it; -1 off the response.

    Args:
        step_end: [N, T] bool, the last token of each step (``rlpipe.algos.sprm.step_end_mask``).
        response_mask: [N, T] bool.
    Returns:
        [N, T] long.
    """
    ends_before = torch.cumsum(step_end.long(), dim=1) - step_end.long()
    return torch.where(response_mask, ends_before, torch.full_like(ends_before, -1))


def pool_steps(
    token_logits: torch.Tensor, attention_logits: torch.Tensor, steps: torch.Tensor, how: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step logits and the trajectory logit from token logits.

    Args:
        token_logits: [N, T] float, any value off the response. attention_logits: [N, T] (read by ``attention``
        only). steps: [N, T] long from ``step_ids`` (-1 = not a response token). how: one of ``POOLINGS``.
    Returns:
        (step_logits [N, S], step_mask [N, S] bool: the step has tokens, trajectory_logits [N]; 0 for a trajectory
        without response tokens).
    """
    if how not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS} (got {how!r})")
    n, t = token_logits.shape
    s = max(1, int(steps.max()) + 1) if steps.numel() else 1
    real = steps >= 0
    index = steps.clamp(min=0)
    x = token_logits.float()
    counts = torch.zeros(n, s, device=x.device).scatter_add_(1, index, real.float())
    step_mask = counts > 0
    if how == "min":
        big = torch.finfo(x.dtype).max
        filled = torch.full((n, s), big, device=x.device)
        steps_out = filled.scatter_reduce(1, index, x.masked_fill(~real, big), reduce="amin", include_self=True)
        steps_out = steps_out.masked_fill(~step_mask, 0.0)
        trajectory = steps_out.masked_fill(~step_mask, big).min(dim=1).values
    elif how == "mean":
        sums = torch.zeros(n, s, device=x.device).scatter_add_(1, index, x.masked_fill(~real, 0.0))
        steps_out = sums / counts.clamp(min=1)
        trajectory = (steps_out * step_mask).sum(dim=1) / step_mask.sum(dim=1).clamp(min=1)
    else:
        a = attention_logits.float().masked_fill(~real, float("-inf"))
        top = a.max(dim=1, keepdim=True).values
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        e = (a - top).exp().masked_fill(~real, 0.0)  # [N, T], exp(a_t - max_t a)
        denom = torch.zeros(n, s, device=x.device).scatter_add_(1, index, e)
        num = torch.zeros(n, s, device=x.device).scatter_add_(1, index, e * x.masked_fill(~real, 0.0))
        steps_out = num / denom.clamp(min=1e-30)
        trajectory = num.sum(dim=1) / denom.sum(dim=1).clamp(min=1e-30)
    has_tokens = step_mask.any(dim=1)
    trajectory = torch.where(has_tokens, trajectory, torch.zeros_like(trajectory))
    return steps_out, step_mask, trajectory


STEP_FREE_POOLINGS = ("min", "attention")  # their trajectory logit does not depend on where the steps end


def pool_trajectory(token_logits: torch.Tensor, attention_logits: torch.Tensor, rows: torch.Tensor, n: int,
                    how: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The trajectory logit of ``pool_steps`` straight from the response tokens, for the poolings whose trajectory
    the steps do not change: ``min`` (the lowest step minimum is the lowest token) and ``attention`` (step weights
    ∝ Σ exp(a_t) over the step make one softmax over all the trajectory's tokens). No step ends to find, no [N, S]
    table: what scoring a candidate needs, at a fraction of the work.

    Args:
        token_logits, attention_logits: [K] the response tokens' logits (``attention_logits`` read by attention
        only). rows: [K] long, the trajectory each token belongs to. n: trajectories. how: one of
        ``STEP_FREE_POOLINGS``.
    Returns:
        (trajectory logits [N], 0 for a trajectory without tokens; has_tokens [N] bool).
    """
    if how not in STEP_FREE_POOLINGS:
        raise ValueError(f"pooling must be one of {STEP_FREE_POOLINGS} here (got {how!r}); 'mean' needs the steps")
    x = token_logits.float()
    has_tokens = torch.bincount(rows, minlength=n) > 0
    if how == "min":
        big = torch.finfo(x.dtype).max
        trajectory = x.new_full((n,), big).scatter_reduce(0, rows, x, reduce="amin", include_self=True)
    else:
        a = attention_logits.float()
        top = a.new_full((n,), float("-inf")).scatter_reduce(0, rows, a.detach(), reduce="amax", include_self=True)
        e = (a - top[rows]).exp()  # [K], exp(a_t - max over the trajectory)
        trajectory = (x.new_zeros(n).scatter_add(0, rows, e * x)
                      / x.new_zeros(n).scatter_add(0, rows, e).clamp(min=1e-30))
    return torch.where(has_tokens, trajectory, torch.zeros_like(trajectory)), has_tokens
