"""The auxiliary-head hook: small heads trained next to the policy from the policy's own forward pass.

A head reads what that forward pass computed (hidden states of a chosen layer, the response logprobs), adds its own
loss to the policy's, steps its own optimizer, and may score samples. XBai o4's process reward head is one
(``rlpipe.learner.score_head``); another head needs its class, a ``register`` line, and its settings in the builder —
no edits to the learner rank, the batch, or the driver's step.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, NamedTuple, Optional, Protocol

import torch
import torch.distributed as dist

from rlpipe.registry import Registry


class Forward(NamedTuple):
    """What one forward pass of the policy over a TrainBatch yields."""

    logprobs: torch.Tensor  # [N, T], 0 where response_mask is False
    entropy: Optional[torch.Tensor]  # [N, T] or None
    hidden: dict[int, torch.Tensor]  # layer index (into hidden_states) -> [N, T, H] at the response positions
    top_logprobs: Optional[torch.Tensor] = None  # [N, T]: the most likely next token's logprob, or None


class AuxiliaryHead(Protocol):
    name: str  # metric prefix ("<name>/loss", "<name>/auroc") and checkpoint key
    hidden_layer: Optional[int]  # the layer whose hidden states it reads (index into hidden_states), None = none
    uses_entropy: bool  # it reads Forward.entropy: the rank's scoring forward computes it too
    uses_top_logprob: bool  # likewise Forward.top_logprobs

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
    import rlpipe.learner.dense_head  # noqa: F401  (the built-in heads register themselves on import)
    import rlpipe.learner.score_head  # noqa: F401

    return [AUXILIARY_HEADS.get(kind)(hidden_size, settings, device, seed) for kind, settings in specs]


class ReplicatedHead:
    """What every head kept as a replica on each learner rank shares: its gradients averaged over the ranks by
    hand (it lives outside FSDP / DeepSpeed), its own optimizer, checkpoint state, and an export of its weights and
    settings beside the HF weights. Subclasses set ``self.s`` (a dataclass of settings), ``self.module``,
    ``self.optimizer``, and the class attributes ``weights_file`` / ``settings_file``."""

    weights_file: str
    settings_file: str
    uses_entropy = False
    uses_top_logprob = False

    def labels(self, batch: Any) -> torch.Tensor:
        """[N]: the outcome (1 correct, 0 wrong); -1 (left out) for format failures when so configured — their
        outcome says nothing about their steps."""
        labels = batch.outcome.float().clone()
        if self.s.exclude_format_failures:
            labels[~batch.format_ok] = -1.0
        return labels

    def step(self) -> None:
        """Average the head's gradients over the ranks (each rank normalised its own loss), then step."""
        if dist.is_initialized() and dist.get_world_size() > 1:
            for p in self.module.parameters():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
                p.grad /= dist.get_world_size()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {"head": self.module.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])

    def export(self, directory: str) -> None:
        torch.save(self.module.state_dict(), f"{directory}/{self.weights_file}")
        with open(f"{directory}/{self.settings_file}", "w") as f:
            json.dump(asdict(self.s), f, indent=2)

    def load_export(self, directory: str) -> None:
        device = next(self.module.parameters()).device
        self.module.load_state_dict(torch.load(f"{directory}/{self.weights_file}", map_location=device))
