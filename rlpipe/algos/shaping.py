"""Reward shaping and group filters (DAPO)."""

from __future__ import annotations

import torch

from rlpipe.algos.advantages import group_stats


def overlong_penalty(response_lengths: torch.Tensor, max_len: int, buffer_len: int) -> torch.Tensor:
    """DAPO soft overlong punishment (arXiv 2503.14476 eq. 13), lengths [N] -> penalty [N]:

        0                              if L ≤ max_len − buffer
        ((max_len − buffer) − L)/buffer  if max_len − buffer < L ≤ max_len
        −1                             if L > max_len
    """
    if not 0 < buffer_len <= max_len:
        raise ValueError(f"need 0 < buffer_len <= max_len (got buffer_len={buffer_len}, max_len={max_len})")
    lengths = response_lengths.to(torch.float32)
    start = max_len - buffer_len
    ramp = (start - lengths) / buffer_len
    return torch.where(lengths <= start, torch.zeros_like(lengths), torch.where(lengths <= max_len, ramp, -torch.ones_like(lengths)))


def zero_variance_group_mask(rewards: torch.Tensor, group_index: torch.Tensor) -> torch.Tensor:
    """bool [N]: True where the sample's group has non-identical rewards (DAPO dynamic sampling keeps those).

    Groups whose samples all got the same reward have zero advantage under every group-relative estimator.
    """
    _, std, size = group_stats(rewards, group_index)
    return (size > 1) & (std > 0)


def truncated_mask(finish_is_length: torch.Tensor) -> torch.Tensor:
    """bool [N]: True for responses to KEEP in the loss under DAPO overlong filtering (those that were not cut)."""
    return ~finish_is_length.bool()
