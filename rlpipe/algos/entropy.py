"""Per-token entropy of the policy's next-token distribution."""

from __future__ import annotations

from typing import Optional

import torch


def entropy_from_logits(logits: torch.Tensor, chunk_rows: int = 64,
                        logsumexp: Optional[torch.Tensor] = None) -> torch.Tensor:
    """H = logsumexp(z) − Σ softmax(z)·z per position, for logits [N, T, V] -> [N, T].

    ``logsumexp`` [N, T]: logsumexp(z), when the caller has it already (the logprobs need it): the softmax is then
    exp(z − logsumexp(z)), one pass over the logits less. Computed in chunks of rows so the [N, T, V] softmax is
    never held whole next to the logits.
    """
    out = []
    lse_chunks = logsumexp.split(chunk_rows, dim=0) if logsumexp is not None else None
    for i, chunk in enumerate(logits.split(chunk_rows, dim=0)):
        lse = lse_chunks[i] if lse_chunks is not None else torch.logsumexp(chunk, dim=-1)
        out.append(lse - (torch.exp(chunk - lse.unsqueeze(-1)) * chunk).sum(dim=-1))
    return torch.cat(out) if out else logits.new_zeros(logits.shape[:-1])
