"""One learner rank: the policy (wrapped by a backend), the frozen reference, logprobs, updates, weight export.

A plain class: the Ray actor around it (``rlpipe.driver.groups``) only forwards calls, and local mode builds it
in-process with world size 1.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist

from rlpipe.learner.batch import TrainBatch, num_micro_batches, split_even
from rlpipe.learner.fsdp2 import reshard
from rlpipe.learner.objective import GlobalCounts, ObjectiveSettings, forward_logprobs, policy_objective
from rlpipe.learner.score_head import ScoreHeadSettings, ScoreHeadTrainer


@dataclass(frozen=True)
class OptimizerSettings:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0


def free_port_address() -> tuple[str, int]:
    """This node's address and a free TCP port, for the rank-0 rendezvous."""
    addr = os.environ.get("RLPIPE_MASTER_ADDR", "127.0.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((addr, 0))
        return addr, s.getsockname()[1]


class LearnerWorker:
    def __init__(
        self,
        *,
        rank: int,
        world_size: int,
        master_addr: str,
        master_port: int,
        model_path: str,
        backend: str,
        optimizer: OptimizerSettings,
        objective: ObjectiveSettings,
        micro_batch_samples: int,
        with_reference: bool,
        seed: int,
        dtype: str = "float32",
        backend_options: Optional[dict] = None,
        dist_timeout_s: float = 600.0,
        score_head: Optional[ScoreHeadSettings] = None,
    ):
        from transformers import AutoModelForCausalLM

        self.rank, self.world_size = rank, world_size
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        dist.init_process_group(
            backend="nccl" if self.device.type == "cuda" else "gloo",
            init_method=f"tcp://{master_addr}:{master_port}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=dist_timeout_s),
        )
        torch.manual_seed(seed)
        self.objective = objective
        self.micro_batch_samples = micro_batch_samples
        torch_dtype = getattr(torch, dtype)
        self.dtype = dtype

        def load() -> torch.nn.Module:
            return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).to(self.device)

        policy = load()
        hidden_size = policy.config.hidden_size
        self.backend = self._build_backend(backend, policy, optimizer, backend_options or {})
        self.reference = self._build_reference(backend, load()) if with_reference else None
        # XBai o4's score head (SPRM), trained next to the policy from the policy's own forward pass.
        self.score_head = ScoreHeadTrainer(hidden_size, score_head, self.device, seed) if score_head else None

    def _build_backend(self, name: str, module, optimizer: OptimizerSettings, options: dict):
        common = dict(device_type=self.device.type, lr=optimizer.lr, betas=tuple(optimizer.betas),
                      weight_decay=optimizer.weight_decay, max_grad_norm=optimizer.max_grad_norm)
        if name == "fsdp2":
            from rlpipe.learner.fsdp2 import FSDP2Backend

            return FSDP2Backend(module, **common)
        if name == "deepspeed":
            from rlpipe.learner.deepspeed_backend import DeepSpeedBackend

            return DeepSpeedBackend(module, **common, dtype=self.dtype, **options)
        raise ValueError(f"unknown learner.backend {name!r}; valid: fsdp2, deepspeed")

    def _build_reference(self, name: str, module) -> torch.nn.Module:
        module.requires_grad_(False)
        module.eval()
        if name == "fsdp2":
            from rlpipe.learner.fsdp2 import shard_model

            return shard_model(module, self.device.type)
        return module  # DeepSpeed: the reference stays a full replica (inference only)

    # --- the calls the driver makes -------------------------------------------------------------------------

    @torch.no_grad()
    def compute_logprobs(self, shard: TrainBatch) -> dict[str, torch.Tensor]:
        """Old (current policy) and reference logprobs of this rank's shard, [n, T] each; with a score head also its
        trajectory scores [n] ("sprm_scores"), from the same forward pass."""
        shard = shard.to(self.device)
        num_micro = num_micro_batches(shard.num_samples, self.micro_batch_samples)
        self.backend.module.eval()
        out: dict[str, list[torch.Tensor]] = {"old_logprobs": [], "ref_logprobs": [], "sprm_scores": []}
        layer = self.score_head.s.layer if self.score_head else None
        head_seconds = 0.0
        for micro in split_even(shard, num_micro):
            fwd = forward_logprobs(self.backend.module, micro, self.objective.temperature, hidden_layer=layer)
            out["old_logprobs"].append(fwd.logprobs)
            if self.score_head is not None:
                start = time.perf_counter()
                out["sprm_scores"].append(self.score_head.scores(fwd.hidden, micro))
                head_seconds += time.perf_counter() - start
            if self.reference is not None:
                out["ref_logprobs"].append(forward_logprobs(self.reference, micro, self.objective.temperature).logprobs)
        result = {k: torch.cat(v).cpu() for k, v in out.items() if v}
        if self.score_head is not None:  # what the head adds on top of the forward pass (evaluation reports it)
            result["sprm_head_seconds"] = torch.tensor([head_seconds])
        return result

    def update(self, minibatches: list[tuple[TrainBatch, GlobalCounts]]) -> dict[str, float]:
        """One optimizer step per mini-batch (this rank's shard of it); metrics averaged over mini-batches."""
        module = self.backend.module
        module.train()
        totals: dict[str, float] = {}
        for shard, counts in minibatches:
            shard = shard.to(self.device)
            micros = split_even(shard, num_micro_batches(shard.num_samples, self.micro_batch_samples))
            step_metrics: dict[str, float] = {}
            for i, micro in enumerate(micros):
                fwd = forward_logprobs(module, micro, self.objective.temperature, with_entropy=True,
                                       hidden_layer=self.score_head.s.layer if self.score_head else None)
                loss, metrics = policy_objective(fwd.logprobs, fwd.entropy, micro, counts, self.objective)
                if self.score_head is not None:
                    # Its own loss is a mean over this micro-batch's kept steps: micro-batches weigh equally.
                    head_loss, head_metrics = self.score_head.loss(fwd.hidden, micro)
                    loss = loss + head_loss / len(micros)
                    metrics.update({k: v / len(micros) for k, v in head_metrics.items()})
                self.backend.backward(loss, is_last_micro_batch=i == len(micros) - 1)
                for k, v in metrics.items():
                    step_metrics[k] = step_metrics.get(k, 0.0) + float(v)
            step_metrics["actor/grad_norm"] = self.backend.step()
            if self.score_head is not None:
                self.score_head.step()
            for k, v in step_metrics.items():
                totals[k] = totals.get(k, 0.0) + v / len(minibatches)
        totals["perf/learner_peak_mem_gib"] = self.peak_memory_gib()
        return totals

    def peak_memory_gib(self) -> float:
        """Peak device memory on GPU; on CPU the process's peak resident set (weights, optimizer, activations)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux

    def export_weights(self) -> Optional[dict[str, torch.Tensor]]:
        """Collective. Full CPU weights on rank 0 (tied ``lm_head.weight`` included explicitly), None elsewhere."""
        state = self.backend.full_state_dict()
        if state is None:
            return None
        if "lm_head.weight" not in state and "model.embed_tokens.weight" in state:
            # Tied embeddings: vLLM keeps its own output layer, which stays stale unless it is sent too.
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
        return state

    def save_hf(self, path: str, source_model_path: str) -> None:
        """Collective. Rank 0 writes the policy in Hugging Face format (+ the tokenizer), loadable by vLLM."""
        state = self.export_weights()
        if state is None:
            return
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source_model_path))
        model.load_state_dict(state, assign=True)
        model.tie_weights()
        model.save_pretrained(path)
        AutoTokenizer.from_pretrained(source_model_path).save_pretrained(path)
        if self.score_head is not None:  # beside the HF weights: the head and how to apply it
            import json
            from dataclasses import asdict

            torch.save(self.score_head.head.state_dict(), f"{path}/score_head.pt")
            with open(f"{path}/score_head.json", "w") as f:
                json.dump(asdict(self.score_head.s), f, indent=2)

    def load_score_head(self, path: str) -> None:
        """Head weights saved beside exported HF weights (``score_head.pt``)."""
        self.score_head.head.load_state_dict(torch.load(path, map_location=self.device))

    def save_checkpoint(self, path: str) -> None:
        """Collective: ``path/policy`` (weights + optimizer, backend format), ``path/reference``, and the score head
        with its optimizer (``path/score_head.pt``, written by rank 0: it is the same on every rank)."""
        self.backend.save_checkpoint(f"{path}/policy")
        if self.score_head is not None and self.rank == 0:
            torch.save(self.score_head.state_dict(), f"{path}/score_head.pt")
        if self.reference is not None:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_model_state_dict

            reshard(self.reference)
            dcp.save({"model": get_model_state_dict(self.reference)}, checkpoint_id=f"{path}/reference")

    def load_checkpoint(self, path: str) -> None:
        self.backend.load_checkpoint(f"{path}/policy")
        if self.score_head is not None:
            self.score_head.load_state_dict(torch.load(f"{path}/score_head.pt", map_location=self.device))
        if self.reference is not None:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

            reshard(self.reference)
            state = {"model": get_model_state_dict(self.reference)}
            dcp.load(state, checkpoint_id=f"{path}/reference")
            set_model_state_dict(self.reference, state["model"])

    @torch.no_grad()
    def reset_reference(self, reset_optimizer: bool = False) -> dict[str, float]:
        """ProRL-style reset: reference ← current policy (shard by shard); optionally clear the optimizer state."""
        if self.reference is None:
            raise RuntimeError("reset_reference called but this learner has no reference model (kl_coef == 0)")
        self.backend.copy_policy_into(self.reference)
        if reset_optimizer:
            self.backend.reset_optimizer()
        return {"optimizer_state_tensors": float(self.backend.optimizer_state_size())}

    def node_id(self) -> str:
        """The Ray node this rank runs on ('' outside Ray): placement tests and logs use it."""
        try:
            import ray

            return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        except ImportError:
            return ""

    def shutdown(self) -> None:
        if hasattr(self.backend, "shutdown"):
            self.backend.shutdown()
        if dist.is_initialized():
            dist.destroy_process_group()
