"""What a learner backend (FSDP2, DeepSpeed) provides to the rank-level worker."""

from __future__ import annotations

from typing import Optional, Protocol

import torch

BACKENDS = ("fsdp2", "deepspeed")  # learner.backend
ZERO_STAGES = (1, 2, 3)  # learner.deepspeed.zero_stage
OLD_LOGPROBS = ("recompute", "rollout")  # algorithm.old_logprobs: where PPO's old (behaviour) logprobs come from

class TrainingBackend(Protocol):
    module: torch.nn.Module  # call it for forward passes

    def backward(self, loss: torch.Tensor, is_last_micro_batch: bool) -> None: ...

    def step(self) -> float:
        """Clip gradients, apply the optimizer, zero the gradients; returns the global gradient norm."""
        ...

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next optimizer steps (a stage's schedule; RL keeps the constructor's)."""
        ...

    def full_state_dict(self) -> Optional[dict[str, torch.Tensor]]:
        """Collective: gathers full (unsharded) CPU weights; rank 0 gets them, other ranks get None."""
        ...

    @torch.no_grad()
    def copy_policy_into(self, reference: torch.nn.Module) -> None:
        """Collective: reference ← current policy weights (ProRL reset); ``reference`` is laid out by the backend."""
        ...

    def save_checkpoint(self, path: str) -> None:
        """Collective: policy weights and optimizer state, in the backend's native sharded format."""
        ...

    def load_checkpoint(self, path: str) -> None: ...

    def reset_optimizer(self) -> None: ...

    def optimizer_state_size(self) -> int:
        """Number of tensors held in the optimizer state (0 right after a reset)."""
        ...

    def shutdown(self) -> None:
        """Free what the backend holds beyond the process group (which the rank destroys afterwards)."""
        ...
