"""Per-token entropy of the policy's next-token distribution."""

from __future__ import annotations

import torch


def entropy_from_logits(logits: torch.Tensor, chunk_rows: int = 64) -> torch.Tensor:
    """H = logsumexp(z) − Σ softmax(z)·z per position, for logits [N, T, V] -> [N, T].

    Computed in chunks of rows so the [N, T, V] softmax is never held whole next to the logits.
    """
    out = []
    for chunk in logits.split(chunk_rows, dim=0):
        lse = torch.logsumexp(chunk, dim=-1)
        out.append(lse - (torch.softmax(chunk, dim=-1) * chunk).sum(dim=-1))
    return torch.cat(out) if out else logits.new_zeros(logits.shape[:-1])
