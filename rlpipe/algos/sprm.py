"""Self-supervised process reward model (SPRM) of XBai o4 / MetaStone-S1 (arXiv 2507.01951): the pure parts.

A small head scores the hidden state at the end of each reasoning step; a trajectory's score is the geometric mean
of its step probabilities; the head learns from the trajectory's outcome alone (every step gets the outcome label),
keeping only steps whose current prediction already agrees with that label (the paper's self-supervised filter).

Shapes: N trajectories, T response tokens, H hidden size.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch


def step_end_mask(
    token_ids: torch.Tensor,
    response_mask: torch.Tensor,
    delimiter_ids: Sequence[int],
    think_start_id: Optional[int] = None,
    think_end_id: Optional[int] = None,
) -> torch.Tensor:
    """Which response positions the head scores: the token just before a step delimiter.

    Rules (as the paper's code): only the first delimiter of a run counts (the token before it must not itself be a
    delimiter); a delimiter directly after ``<think>`` ends no step (``<think>`` itself is never scored); when the
    response has a ``</think>``, only positions before it (the thinking span) count, otherwise the whole response.

    Args:
        token_ids: [N, T] response tokens. response_mask: [N, T] bool, True on real tokens.
    Returns:
        [N, T] bool.
    """
    delim = torch.isin(token_ids, torch.tensor(list(delimiter_ids), dtype=token_ids.dtype))
    delim = delim & response_mask
    next_is_delim = torch.zeros_like(delim)
    next_is_delim[:, :-1] = delim[:, 1:]
    mask = next_is_delim & ~delim & response_mask
    if think_start_id is not None:
        mask &= token_ids != think_start_id
    if think_end_id is not None:
        is_end = (token_ids == think_end_id) & response_mask
        has_end = is_end.any(dim=1, keepdim=True)
        before_end = (is_end.long().cumsum(dim=1) == 0)  # strictly before the first </think>
        mask &= before_end | ~has_end
    return mask


def trajectory_scores(step_logits: torch.Tensor, step_mask: torch.Tensor) -> torch.Tensor:
    """Geometric mean of the sigmoid step scores per trajectory; 0 where no step is scored.

    Args:
        step_logits: [N, T] head logits (any value where step_mask is False). step_mask: [N, T] bool.
    Returns:
        [N] scores in [0, 1].
    """
    log_p = torch.nn.functional.logsigmoid(step_logits.float()).masked_fill(~step_mask, 0.0)
    steps = step_mask.sum(dim=1)
    mean_log = log_p.sum(dim=1) / steps.clamp(min=1)
    return torch.where(steps > 0, mean_log.exp(), torch.zeros_like(mean_log))


def sprm_loss(
    step_logits: torch.Tensor,
    step_mask: torch.Tensor,
    labels: torch.Tensor,
    positive_weight: float = 1.0,
    agreement_filter: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Self-supervised process-reward loss: class-balanced BCE over the steps whose prediction agrees with the label.

    Every scored step of trajectory i gets ``labels[i]`` (1 = the outcome was correct, 0 = not; a negative label
    excludes the trajectory, e.g. a format failure). A step is kept when ``(logit > 0) == label`` (every usable step
    with ``agreement_filter=False``: plain outcome-supervised BCE, for comparison). Each class present
    among the kept steps gets half of the total weight (class balance); positives are weighted ``positive_weight``
    times more on top (the paper's code uses 1.5). The loss is normalised by the total weight, so it is a weighted
    mean; no kept step gives a zero loss (still attached to the graph).

    Args:
        step_logits: [N, T]. step_mask: [N, T] bool. labels: [N] float (1, 0, or < 0 to exclude).
    Returns:
        (scalar loss, metrics: kept fraction, positive fraction among kept).
    """
    y = labels.float().unsqueeze(1).expand_as(step_logits)
    usable = step_mask & (labels >= 0).unsqueeze(1)
    agree = (step_logits.detach() > 0) == (y > 0.5)
    kept = usable & agree if agreement_filter else usable
    pos, neg = kept & (y > 0.5), kept & (y <= 0.5)
    n_pos, n_neg = pos.sum(), neg.sum()
    classes = ((n_pos > 0).float() + (n_neg > 0).float()).clamp(min=1)
    w_pos = positive_weight / (classes * n_pos.clamp(min=1))
    w_neg = 1.0 / (classes * n_neg.clamp(min=1))
    weights = pos.float() * w_pos + neg.float() * w_neg
    bce = torch.nn.functional.binary_cross_entropy_with_logits(step_logits.float(), y, reduction="none")
    total = weights.sum()
    loss = (bce * weights).sum() / total.clamp(min=1e-12)
    n_usable = usable.sum().clamp(min=1)
    return loss, {"sprm/kept_frac": kept.sum() / n_usable, "sprm/pos_frac": n_pos / kept.sum().clamp(min=1)}


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient flowing back through it by ``scale``.

    The head reads the backbone's hidden states through this with scale 1e-4: the head learns at full strength
    while the backbone feels its loss 10^4 times weaker than the policy loss.
    """
    return _ScaleGrad.apply(x, scale)
