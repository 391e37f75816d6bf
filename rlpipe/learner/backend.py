"""What a learner backend (FSDP2, DeepSpeed) provides to the rank-level worker."""

from __future__ import annotations

from typing import Optional, Protocol

import torch


class TrainingBackend(Protocol):
    module: torch.nn.Module  # call it for forward passes

    def backward(self, loss: torch.Tensor, is_last_micro_batch: bool) -> None: ...

    def step(self) -> float:
        """Clip gradients, apply the optimizer, zero the gradients; returns the global gradient norm."""
        ...

    def full_state_dict(self) -> Optional[dict[str, torch.Tensor]]:
        """Collective: gathers full (unsharded) CPU weights; rank 0 gets them, other ranks get None."""
        ...

    def save_checkpoint(self, path: str) -> None:
        """Collective: policy weights and optimizer state, in the backend's native sharded format."""
        ...

    def load_checkpoint(self, path: str) -> None: ...

    def reset_optimizer(self) -> None: ...

    def optimizer_state_size(self) -> int:
        """Number of tensors held in the optimizer state (0 right after a reset)."""
        ...
