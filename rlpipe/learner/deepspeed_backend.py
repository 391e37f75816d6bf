"""DeepSpeed ZeRO (stages 1, 2, 3) backend: the same contract as the FSDP2 backend (``backend.TrainingBackend``).

Micro-batching stays with the learner worker: DeepSpeed's own gradient accumulation is set to 1 (so it never
rescales the loss — the objective is already normalised by global counts) and the accumulation boundary is set by
hand on the last micro-batch of each mini-batch, so gradients are reduced and the optimizer steps once per mini-batch,
exactly like the FSDP2 backend. DeepSpeed averages gradients over ranks, as FSDP does; the objective's dp-size factor
accounts for it.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Optional

import torch
import torch.distributed as dist


def _avoid_shm_op_build() -> None:
    """On CPU DeepSpeed JIT-compiles a shared-memory all-reduce op at its first start (~70 s on 2 cores). Marking it
    incompatible makes DeepSpeed use torch.distributed (gloo) collectives, which the learner uses anyway."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


class DeepSpeedBackend:
    def __init__(
        self,
        module: torch.nn.Module,
        *,
        device_type: str,
        lr: float,
        betas: tuple[float, float],
        weight_decay: float,
        max_grad_norm: float,
        zero_stage: int = 2,
        offload_optimizer: bool = False,
        dtype: str = "float32",
    ):
        if device_type == "cpu":
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        # DeepSpeed reads the device index from LOCAL_RANK (its launcher sets it). The process group already exists
        # and each rank uses the device the worker picked (one visible GPU per Ray actor).
        os.environ.setdefault("LOCAL_RANK", str(torch.cuda.current_device()) if device_type == "cuda" else "0")
        import deepspeed

        if device_type == "cpu":
            _avoid_shm_op_build()
        if zero_stage not in (1, 2, 3):
            raise ValueError(f"learner.deepspeed.zero_stage must be 1, 2 or 3 (got {zero_stage})")
        self.zero_stage = zero_stage
        self._optim_args = dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        zero = {"stage": zero_stage}
        if offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu"}
        config = {
            "train_micro_batch_size_per_gpu": 1,  # nominal: the worker feeds DeepSpeed its own micro-batches
            "gradient_accumulation_steps": 1,  # never rescale the loss (see the module docstring)
            "gradient_clipping": max_grad_norm if max_grad_norm > 0 else 0.0,
            "zero_optimization": zero,
            "bf16": {"enabled": dtype == "bfloat16"},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 1 << 30,
            "wall_clock_breakdown": False,
        }
        # torch's AdamW, not DeepSpeed's fused/cpu Adam: those JIT-compile C++/CUDA ops at first use. With optimizer
        # offload DeepSpeed needs its CPU Adam (compiled once and cached by torch under ~/.cache/torch_extensions).
        trainable = [p for p in module.parameters() if p.requires_grad]  # with LoRA: the adapters only
        optimizer = None if offload_optimizer else torch.optim.AdamW(trainable, **self._optim_args)
        if offload_optimizer:
            config["optimizer"] = {"type": "AdamW", "params": {"lr": lr, "betas": list(betas),
                                                                "weight_decay": weight_decay}}
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, config=config,
                                                                 dist_init_required=False)
        self.module = self.engine

    def backward(self, loss: torch.Tensor, is_last_micro_batch: bool) -> None:
        # Reduce gradients (and step, in step()) once per mini-batch, not once per micro-batch.
        self.engine.set_gradient_accumulation_boundary(is_last_micro_batch)
        self.engine.backward(loss)

    def step(self) -> float:
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def set_lr(self, lr: float) -> None:
        for group in self._base_optimizer().param_groups:  # ZeRO steps the base optimizer on its fp32 partition
            group["lr"] = lr

    def full_state_dict(self) -> Optional[dict[str, torch.Tensor]]:
        """Collective. ZeRO-1/2 keep full parameters on every rank; ZeRO-3 gathers them (all ranks take part)."""
        import deepspeed

        module = self.engine.module
        if self.zero_stage == 3:
            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        else:
            state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        return state if dist.get_rank() == 0 else None

    @torch.no_grad()
    def copy_policy_into(self, reference: torch.nn.Module) -> None:
        """Collective. reference ← current policy weights (the reference is a full replica on every rank)."""
        import deepspeed

        params = list(self.engine.module.parameters())
        gather = (deepspeed.zero.GatheredParameters(params, modifier_rank=None) if self.zero_stage == 3
                  else nullcontext())
        with gather:
            for ref, p in zip(reference.parameters(), params):
                ref.copy_(p.detach().to(ref.dtype))

    def save_checkpoint(self, path: str) -> None:
        """Collective: DeepSpeed's native format (model states + each rank's ZeRO optimizer partition)."""
        self.engine.save_checkpoint(path, tag="state", save_latest=False)

    def load_checkpoint(self, path: str) -> None:
        load_path, _ = self.engine.load_checkpoint(path, tag="state", load_optimizer_states=True,
                                                   load_lr_scheduler_states=True)
        if load_path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint under {path}")

    def _base_optimizer(self):
        opt = self.engine.optimizer
        return getattr(opt, "optimizer", opt)  # ZeRO wraps the torch optimizer

    def reset_optimizer(self) -> None:
        # The ZeRO optimizer keeps the fp32 master partition; only the moments (the base optimizer's state) go.
        self._base_optimizer().state.clear()

    def optimizer_state_size(self) -> int:
        return sum(len(s) for s in self._base_optimizer().state.values())

    def shutdown(self) -> None:
        """Destroy the process group through DeepSpeed, which also drops the groups it cached: a later DeepSpeed
        engine in this process (tests, local mode) would otherwise use groups of the destroyed one."""
        import gc

        import deepspeed.comm
        from deepspeed.utils import groups

        # Free the engine (its ZeRO optimizer, hooks and gloo work handles) while the interpreter is fully alive: left
        # to interpreter exit, a gloo worker thread freeing tensors there can abort the process (SIGABRT, "terminate
        # called without an active exception", seen once in CI on ZeRO-2).
        # destroy() logs through DeepSpeed's comm layer, which needs a live group (a process that shared its group
        # with an in-process vLLM engine may have none left by now): then only the references go.
        if self.engine is not None and deepspeed.comm.is_initialized():
            self.engine.destroy()
        self.engine = self.module = self.optimizer = None
        gc.collect()
        if dist.is_initialized():
            deepspeed.comm.destroy_process_group()
        # DeepSpeed caches a clone of the world group at module level; a later engine would use the destroyed one.
        groups._WORLD_GROUP = None
