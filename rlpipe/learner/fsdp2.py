"""FSDP2 (``torch.distributed.fsdp.fully_shard``) backend: parameters sharded over the learner ranks."""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard


def shard_model(module: torch.nn.Module, device_type: str) -> torch.nn.Module:
    """Shard each decoder layer, then the root (embeddings, final norm and a tied lm_head stay together). On one rank
    the module stays plain: FSDP2 over a single rank shards nothing, and its DTensor dispatch (and the per-tensor
    AdamW it falls back to) made an SFT step of the tiny model 1.29x slower (docs/learners.md)."""
    if dist.get_world_size() == 1:
        return module
    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    for layer in module.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(module, mesh=mesh)
    return module


def reshard(module: torch.nn.Module) -> None:
    """Free unsharded parameters FSDP2 may keep after a forward (so state dicts and copies see shards)."""
    for m in module.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


class FSDP2Backend:
    def __init__(
        self,
        module: torch.nn.Module,
        *,
        device_type: str,
        lr: float,
        betas: tuple[float, float],
        weight_decay: float,
        max_grad_norm: float,
    ):
        self.module = shard_model(module, device_type)
        self.sharded = isinstance(self.module, FSDPModule)  # shard_model's own decision (one rank: plain)
        self.max_grad_norm = max_grad_norm
        self._optim_args = dict(lr=lr, betas=betas, weight_decay=weight_decay)
        self.optimizer = torch.optim.AdamW(self._trainable(), **self._optim_args)

    def _trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]  # with LoRA: the adapters only

    def backward(self, loss: torch.Tensor, is_last_micro_batch: bool) -> None:
        if self.sharded:  # reduce-scatter gradients once per mini-batch, not once per micro-batch
            self.module.set_requires_gradient_sync(is_last_micro_batch)
        loss.backward()

    def step(self) -> float:
        params = [p for p in self.module.parameters() if p.grad is not None]
        max_norm = self.max_grad_norm if self.max_grad_norm > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def full_state_dict(self) -> Optional[dict[str, torch.Tensor]]:
        state = get_model_state_dict(self.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return state if dist.get_rank() == 0 else None

    @torch.no_grad()
    def copy_policy_into(self, reference: torch.nn.Module) -> None:
        """reference ← current policy, shard by shard (the reference is sharded the same way)."""
        # After a forward pass FSDP2 may leave the root's parameters unsharded (plain tensors): reshard both models
        # so parameters pair up shard by shard.
        reshard(self.module)
        reshard(reference)
        for ref_param, param in zip(reference.parameters(), self.module.parameters()):
            ref_param.copy_(param.detach())

    def save_checkpoint(self, path: str) -> None:
        """Collective: every rank writes its shards of the policy and the optimizer state (torch DCP format)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optim_state = get_state_dict(self.module, self.optimizer)
        dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=path)

    def load_checkpoint(self, path: str) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_state, optim_state = get_state_dict(self.module, self.optimizer)  # the shapes to load into
        state = {"model": model_state, "optimizer": optim_state}
        dcp.load(state, checkpoint_id=path)
        set_state_dict(self.module, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])

    def reset_optimizer(self) -> None:
        self.optimizer = torch.optim.AdamW(self._trainable(), **self._optim_args)

    def optimizer_state_size(self) -> int:
        return sum(len(s) for s in self.optimizer.state.values())

    def shutdown(self) -> None:
        pass  # the rank destroys the process group; FSDP2 keeps no groups of its own
