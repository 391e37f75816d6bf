"""The auxiliary-head hook: small heads trained next to the policy from the policy's own forward pass.

A head reads what that forward pass computed (hidden states of a chosen layer, the response logprobs), adds its own
loss to the policy's, steps its own optimizer, and may score samples. XBai o4's process reward head is one
(``rlpipe.learner.score_head``); another head needs its class, a ``register`` line, and its settings in the builder —
no edits to the learner rank, the batch, or the driver's step.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Protocol

import torch

from rlpipe.registry import Registry


class Forward(NamedTuple):
    """What one forward pass of the policy over a TrainBatch yields."""

    logprobs: torch.Tensor  # [N, T], 0 where response_mask is False
    entropy: Optional[torch.Tensor]  # [N, T] or None
    hidden: dict[int, torch.Tensor]  # layer index (into hidden_states) -> [N, P+T, H], for the layers heads asked for


class AuxiliaryHead(Protocol):
    name: str  # metric prefix ("<name>/loss", "<name>/auroc") and checkpoint key
    hidden_layer: Optional[int]  # the layer whose hidden states it reads (index into hidden_states), None = none

    def loss(self, fwd: Forward, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Its loss on one micro-batch (a mean over the micro-batch: the rank weighs micro-batches equally)."""
        ...

    def scores(self, fwd: Forward, batch: Any) -> Optional[torch.Tensor]:
        """[N] per-sample scores (no grad), or None for a head that does not score samples."""
        ...

    def step(self) -> None:
        """After the policy's optimizer step: average its gradients over ranks and step its own optimizer."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def export(self, directory: str) -> None:
        """Write itself beside exported Hugging Face weights."""
        ...

    def load_export(self, directory: str) -> None: ...


# kind -> builder(hidden_size, settings, device, seed) -> AuxiliaryHead
AUXILIARY_HEADS: Registry = Registry("auxiliary head")


def build_heads(specs, hidden_size: int, device: torch.device, seed: int) -> list[AuxiliaryHead]:
    """``specs``: (kind, settings) pairs, as the driver's builder passes them."""
    return [AUXILIARY_HEADS.get(kind)(hidden_size, settings, device, seed) for kind, settings in specs]
