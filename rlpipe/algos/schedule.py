"""Learning-rate schedules of the supervised and preference stages (RL keeps a constant rate)."""

from __future__ import annotations

import math


def warmup_cosine_lr(step: int, total_steps: int, peak_lr: float, warmup_ratio: float, min_lr_ratio: float) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``total_steps``: linear warm-up over the first
    W = max(1, ⌊warmup_ratio · total_steps⌋) steps, times a cosine from 1 down to ``min_lr_ratio``::

        lr(s) = peak · min(1, (s + 1) / W) · (m + (1 − m) · ½ (1 + cos(π s / S)))

    (m = min_lr_ratio, S = total_steps; the warm-up and the decay overlap, as in the default job's warm-start.)
    Loshchilov & Hutter, SGDR, arXiv 1608.03983 (the cosine); Goyal et al., arXiv 1706.02677 (the warm-up).
    """
    warmup = max(1, int(warmup_ratio * total_steps))
    progress = min(1.0, step / max(1, total_steps))
    cosine = min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return peak_lr * min(1.0, (step + 1) / warmup) * cosine
