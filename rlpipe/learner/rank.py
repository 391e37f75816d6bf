"""One learner rank: the policy (wrapped by a backend), the frozen reference, auxiliary heads, logprobs, updates,
weight export.

A plain class: the Ray actor around it (``rlpipe.driver.actors.RoleActor``) only forwards calls, and local mode
builds it in-process with world size 1. A step's samples reach it once (``prepare``) and stay until ``update``.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist

from rlpipe.learner.backend import BACKENDS, OLD_LOGPROBS
from rlpipe.learner.batch import (SampleShard, TrainBatch, capped_cost, count_token_budget_groups, num_micro_batches,
                                  padded_cost, split_by_tokens, summed_cost)
from rlpipe.learner.fsdp2 import reshard
from rlpipe.learner.heads import build_heads
from rlpipe.learner.lora import LoraSettings, adapters_disabled, inject, lora_metrics, merge_state, save_adapter
from rlpipe.learner.packing import PACKING_MODES
from rlpipe.learner.objective import GlobalCounts, ObjectiveSettings, forward_logprobs, policy_objective
from rlpipe.learner.settings import CorrectionSettings, OptimizerSettings, free_port_address  # noqa: F401 (API)
from rlpipe.learner.stages import StageSteps


class LearnerRank(StageSteps):
    """One rank; the SFT and preference steps come from ``StageSteps`` (rlpipe/learner/stages.py)."""

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
        dtype: str,
        backend_options: dict,
        dist_timeout_s: float,
        old_logprobs: str,
        correction: CorrectionSettings,
        heads: Sequence[tuple[str, Any]] = (),
        max_tokens_per_micro_batch: Optional[int] = None,
        packing: str = "none",
        threads: int = 1,
        lora: Optional[LoraSettings] = None,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)

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
        self.max_tokens_per_micro_batch = max_tokens_per_micro_batch
        if packing not in PACKING_MODES:
            raise ValueError(f"packing must be one of {PACKING_MODES} (got {packing!r})")
        self.packing = packing
        if old_logprobs not in OLD_LOGPROBS:
            raise ValueError(f"old_logprobs must be one of {OLD_LOGPROBS} (got {old_logprobs!r})")
        self.old_from_rollout = old_logprobs == "rollout"
        self.correction = correction
        torch_dtype = getattr(torch, dtype)
        self.dtype = dtype
        # Any valid id works under a False attention mask; the tokenizer's own keeps exported batches readable.
        self.pad_id = AutoTokenizer.from_pretrained(model_path).pad_token_id or 0

        def load() -> torch.nn.Module:
            return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).to(self.device)

        policy = load()
        hidden_size = policy.config.hidden_size
        self.lora = lora
        if lora is not None:  # adapters in the policy itself; the base (adapters off) is the reference
            policy = inject(policy, lora)
        self.lora_metrics = lora_metrics(policy) if lora is not None else {}
        self.backend = self._build_backend(backend, policy, optimizer, backend_options)
        self.with_reference = with_reference
        self.reference = (self._build_reference(backend, load()) if with_reference and lora is None else None)
        self.heads = build_heads(heads, hidden_size, self.device, seed)
        self.hidden_layers = tuple(sorted({h.hidden_layer for h in self.heads if h.hidden_layer is not None}))
        self.heads_use_entropy = any(h.uses_entropy for h in self.heads)
        self.heads_use_top_logprob = any(h.uses_top_logprob for h in self.heads)
        # This step's micro-batches, per mini-batch, with their rows' positions in the shard: kept from prepare to update.
        self._prepared: list[list[tuple[TrainBatch, torch.Tensor]]] = []

    def _build_backend(self, name: str, module, optimizer: OptimizerSettings, options: dict):
        common = dict(device_type=self.device.type, lr=optimizer.lr, betas=tuple(optimizer.betas),
                      weight_decay=optimizer.weight_decay, max_grad_norm=optimizer.max_grad_norm)
        if name == "fsdp2":
            from rlpipe.learner.fsdp2 import FSDP2Backend

            return FSDP2Backend(module, **common)
        if name == "deepspeed":
            from rlpipe.learner.deepspeed_backend import DeepSpeedBackend

            return DeepSpeedBackend(module, **common, dtype=self.dtype, **options)
        raise ValueError(f"unknown learner.backend {name!r}; valid: {', '.join(BACKENDS)}")

    def _build_reference(self, name: str, module) -> torch.nn.Module:
        module.requires_grad_(False)
        module.eval()
        if name == "fsdp2":
            from rlpipe.learner.fsdp2 import shard_model

            return shard_model(module, self.device.type)
        return module  # DeepSpeed: the reference stays a full replica (inference only)

    # --- the calls the driver makes -------------------------------------------------------------------------

    @torch.no_grad()
    def prepare(self, shard: SampleShard) -> dict[str, torch.Tensor]:
        """Keep this rank's share of the step for ``update``; compute its old and reference logprobs and the heads'
        scores, one forward pass per model. Old logprobs are the current policy's (``old_logprobs="recompute"``) or
        the engine's own (``"rollout"``: no policy forward unless a head needs one).

        Returns per-sample quantities only ([n] each, in shard order): ``trained_tokens`` (tokens that get a loss,
        after the off-policy correction's mask), ``is_weight_sum`` / ``is_weight_max`` / ``is_limited`` (that
        correction's weights over the trained tokens and how many tokens it truncated or masked), ``kl_sum`` (Σ_t
        k(old, ref) over the trained tokens, with the loss's KL estimator; when there is a reference),
        ``<head>_scores`` for heads that score; and, [1] each, ``head_seconds`` (all heads), ``<head>_seconds``
        (each head's share: its scoring, plus the entropy when a head reads it and the policy needed none) and
        ``forward_seconds`` (the policy forward the heads read, without that entropy).
        """
        self.backend.module.eval()
        n = shard.num_samples
        out: dict[str, torch.Tensor] = {"head_seconds": torch.zeros(1), "forward_seconds": torch.zeros(1)}
        self._prepared = []
        for micro_rows in self._micro_batch_rows(shard):
            micros = []
            for rows in micro_rows:
                micro = shard.to_train_batch(rows.tolist(), self.pad_id, self.packing).to(self.device)
                micro.old_logprobs, micro.ref_logprobs = self._prepare_micro(micro, rows, n, out)
                micros.append((micro, rows))
            self._prepared.append(micros)
        return out

    def _micro_batch_rows(self, shard: SampleShard, packing: Optional[str] = None) -> list[list[torch.Tensor]]:
        """Per mini-batch, the shard rows of each micro-batch. Every rank runs the same number of micro-batches, as
        FSDP's collectives need: ``micro_batch_samples`` rows each (shards are equal in rows), or, with
        ``max_tokens_per_micro_batch``, as many as the rank that needs the most to keep every micro-batch within that
        budget and within ``micro_batch_samples`` samples (one all-reduce per step), each rank cutting its rows into
        that many groups of about equal tokens.

        Padded: rows sorted by length, so each micro-batch, padded to its own longest sample, carries little padding.
        Packed: the units are a prompt's samples on this rank (``shared_prefix``: kept together, the prompt runs once)
        or single samples (``sequences``), sorted by their tokens; a micro-batch costs the sum of its units' tokens.
        ``packing`` overrides ``learner.packing`` (preference pairs are always packed with their prompt once).
        """
        packing = packing or self.packing
        prompt_lengths = shard.prompt_lengths[shard.prompt_index.long()]
        plans = []  # per mini-batch: (its rows, its units, their cost function)
        for mb in range(shard.num_minibatches()):
            rows = (shard.minibatch == mb).nonzero().flatten()
            if packing == "none":
                rows = rows[torch.argsort((prompt_lengths + shard.response_lengths)[rows], stable=True)]
                units = [rows[i: i + 1] for i in range(len(rows))]
                cost = capped_cost(padded_cost(prompt_lengths[rows].tolist(), shard.response_lengths[rows].tolist()),
                                   [1] * len(rows), self.micro_batch_samples)
            else:
                units = self._packing_units(shard, rows, packing)
                cost = self._packed_cost(shard, units, packing)
            plans.append((rows, units, cost))
        budget = self.max_tokens_per_micro_batch
        if budget is None and packing == "none":  # equal-sized slices of the sorted rows
            return [list(rows.tensor_split(num_micro_batches(len(rows), self.micro_batch_samples)))
                    for rows, _, _ in plans]
        # Packed units of several samples need not fill micro_batch_samples exactly, so even without a token
        # budget the count is what the sample cap alone asks (2**62 - 1: no token limit), agreed over the ranks.
        limit = budget if budget is not None else 2 ** 62 - 1
        counts = torch.tensor([count_token_budget_groups(len(units), cost, limit) for _, units, cost in plans],
                              dtype=torch.long)
        if self.world_size > 1:
            dist.all_reduce(counts, op=dist.ReduceOp.MAX)
        out = []
        for (rows, units, cost), k in zip(plans, counts.tolist()):
            if len(units) < k:  # more micro-batches than units: split the largest prompt groups
                units = self._split_units(shard, units, k, packing)
                cost = self._packed_cost(shard, units, packing)
            out.append([torch.cat(units[g.start: g.stop]) for g in split_by_tokens(len(units), cost, int(k))])
        return out

    def _packing_units(self, shard: SampleShard, rows: torch.Tensor, packing: str) -> list[torch.Tensor]:
        """A prompt's samples (shared_prefix; at most ``micro_batch_samples`` per unit) or single samples."""
        if packing == "shared_prefix":
            prompts = shard.prompt_index[rows]
            units = [part for k in torch.unique(prompts).tolist()
                     for part in rows[prompts == k].split(self.micro_batch_samples)]
        else:
            units = [rows[i: i + 1] for i in range(len(rows))]
        return sorted(units, key=lambda u: self._unit_tokens(shard, u, packing))

    def _packed_cost(self, shard: SampleShard, units: list[torch.Tensor], packing: str):
        """A micro-batch of packed units costs the sum of their stream tokens, and more than any budget past
        ``micro_batch_samples`` samples."""
        tokens = [self._unit_tokens(shard, u, packing) for u in units]
        return capped_cost(summed_cost(tokens), [len(u) for u in units], self.micro_batch_samples)

    def _unit_tokens(self, shard: SampleShard, unit: torch.Tensor, packing: str) -> int:
        """Tokens a unit adds to the packed stream: its prompt once (shared) or per sample, plus its responses."""
        prompt = shard.prompt_lengths[shard.prompt_index[unit].long()]
        prompt_tokens = int(prompt[0]) if packing == "shared_prefix" else int(prompt.sum())
        return prompt_tokens + int(shard.response_lengths[unit].sum())

    def _split_units(self, shard: SampleShard, units: list[torch.Tensor], k: int, packing: str) -> list[torch.Tensor]:
        units = list(units)
        while len(units) < k:
            largest = max(range(len(units)), key=lambda i: len(units[i]))
            unit = units.pop(largest)
            units += [unit[: len(unit) // 2], unit[len(unit) // 2:]]
        return sorted(units, key=lambda u: self._unit_tokens(shard, u, packing))

    def _prepare_micro(self, micro: TrainBatch, rows: torch.Tensor, n: int, out: dict[str, torch.Tensor],
                       ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(old, reference) logprobs [m, T] of one micro-batch; its per-sample quantities go into ``out`` at
        ``rows``."""
        from rlpipe.algos.kl import kl_estimate
        from rlpipe.algos.offpolicy import rollout_correction

        def put(key: str, values: torch.Tensor) -> None:
            out.setdefault(key, torch.zeros(n))[rows] = values.detach().float().cpu()

        old = micro.rollout_logprobs.masked_fill(~micro.response_mask, 0.0)
        if not self.old_from_rollout or self.heads:
            timings: dict[str, float] = {}
            start = time.perf_counter()
            fwd = forward_logprobs(self.backend.module, micro, self.objective.temperature,
                                   with_entropy=self.heads_use_entropy, hidden_layers=self.hidden_layers,
                                   timings=timings, with_top_logprob=self.heads_use_top_logprob)
            extras = timings["entropy_seconds"] + timings["top_logprob_seconds"] + timings["hidden_seconds"]
            out["forward_seconds"] += time.perf_counter() - start - extras
            for head in self.heads:
                start = time.perf_counter()
                scores = head.scores(fwd, micro)
                if scores is not None:
                    put(f"{head.name}_scores", scores)
                spent = (time.perf_counter() - start + (timings["entropy_seconds"] if head.uses_entropy else 0.0)
                         + (timings["top_logprob_seconds"] if head.uses_top_logprob else 0.0)
                         + (timings["hidden_seconds"] if head.hidden_layer is not None else 0.0))
                key = f"{head.name}_seconds"
                out[key] = out.get(key, torch.zeros(1)) + spent
                out["head_seconds"] += spent
            if not self.old_from_rollout:
                old = fwd.logprobs
        c = self.correction
        if c.mode != "none":  # proximal = the learner's old logprobs, behaviour = the engine's
            corrected = rollout_correction(c.mode, old, micro.rollout_logprobs, micro.response_mask,
                                           threshold=c.threshold, level=c.level)
            micro.is_weights = corrected.weights
            put("is_limited", corrected.limited.sum(dim=1))
            micro.response_mask = corrected.keep_mask
        weights = micro.is_weights if micro.is_weights is not None else micro.response_mask.float()
        put("is_weight_sum", (weights * micro.response_mask).sum(dim=1))
        put("is_weight_max", (weights * micro.response_mask).max(dim=1).values)
        put("trained_tokens", micro.response_mask.sum(dim=1))
        if not self.with_reference:
            return old, None
        ref = self.reference_logprobs(micro, self.objective.temperature)
        put("kl_sum", (kl_estimate(old, ref, self.objective.kl_estimator) * micro.response_mask).sum(dim=1))
        return old, ref

    def reference_logprobs(self, micro: TrainBatch, temperature: float) -> torch.Tensor:
        """The frozen reference's logprobs [m, T]: its own module, or with LoRA the policy with its adapters off."""
        if self.lora is None:
            return forward_logprobs(self.reference, micro, temperature).logprobs
        with adapters_disabled(self.backend.module) as base:
            return forward_logprobs(base, micro, temperature).logprobs

    @torch.no_grad()
    def response_logprobs(self, shard: SampleShard) -> torch.Tensor:
        """The current policy's logprob of every response token, flat [Σ response lengths] in the layout of
        ``shard.rollout_logprobs`` (to compare with the engine's); keeps nothing for an update."""
        self.backend.module.eval()
        lengths = shard.response_lengths.tolist()
        per_sample: dict[int, torch.Tensor] = {}
        for rows in torch.arange(shard.num_samples).tensor_split(
                num_micro_batches(shard.num_samples, self.micro_batch_samples)):
            micro = shard.to_train_batch(rows.tolist(), self.pad_id).to(self.device)
            logprobs = forward_logprobs(self.backend.module, micro, self.objective.temperature).logprobs.cpu()
            per_sample.update({i: logprobs[k, : lengths[i]] for k, i in enumerate(rows.tolist())})
        return torch.cat([per_sample[i] for i in range(shard.num_samples)]) if per_sample else torch.zeros(0)

    def update(self, advantages: torch.Tensor, counts: Sequence[GlobalCounts]) -> dict[str, float]:
        """One optimizer step per prepared mini-batch. ``advantages`` [n] in shard order; ``counts`` per mini-batch
        (over every rank). Metrics are averaged over mini-batches."""
        if len(counts) != len(self._prepared):
            raise RuntimeError(f"update got counts for {len(counts)} mini-batches, prepare kept {len(self._prepared)}")
        module = self.backend.module
        module.train()
        totals: dict[str, float] = {}
        from rlpipe.algos.offpolicy import mismatch_k3

        gap_max, mismatch = 0.0, 0.0
        for index, (micros, mb_counts) in enumerate(zip(self._prepared, counts)):
            step_metrics: dict[str, float] = {}
            for i, (micro, rows) in enumerate(micros):
                micro.advantages = advantages[rows].to(self.device)
                fwd = forward_logprobs(module, micro, self.objective.temperature, with_entropy=True,
                                       hidden_layers=self.hidden_layers, with_top_logprob=self.heads_use_top_logprob)
                if index == 0:  # before the first optimizer step: engine vs learner on the weights of prepare
                    learner_lp = fwd.logprobs.detach()
                    gap = (micro.rollout_logprobs - learner_lp).abs() * micro.response_mask
                    gap_max = max(gap_max, float(gap.max()) if gap.numel() else 0.0)
                    k3 = mismatch_k3(learner_lp, micro.rollout_logprobs, micro.response_mask)
                    mismatch += float(k3.sum()) / mb_counts.num_tokens * mb_counts.dp_size  # share of the mean
                loss, metrics = policy_objective(fwd.logprobs, fwd.entropy, micro, mb_counts, self.objective)
                for head in self.heads:
                    # A head's loss is a mean over its micro-batch: micro-batches weigh equally.
                    head_loss, head_metrics = head.loss(fwd, micro)
                    loss = loss + head_loss / len(micros)
                    metrics.update({k: v / len(micros) for k, v in head_metrics.items()})
                self.backend.backward(loss, is_last_micro_batch=i == len(micros) - 1)
                for k, v in metrics.items():
                    step_metrics[k] = step_metrics.get(k, 0.0) + float(v)
            step_metrics["actor/grad_norm"] = self.backend.step()
            for head in self.heads:
                head.step()
            for k, v in step_metrics.items():
                totals[k] = totals.get(k, 0.0) + v / len(self._prepared)
        self._prepared = []
        # Engine vs learner on the first mini-batch's tokens: "*_max" metrics are maxima over ranks, others means.
        totals["rollout/logprob_diff_max"] = gap_max
        totals["offpolicy/mismatch_k3"] = mismatch
        totals["perf/learner_peak_mem_gib"] = self.peak_memory_gib()
        totals.update(self.lora_metrics)
        return totals

    def peak_memory_gib(self) -> float:
        """Peak device memory on GPU; on CPU the process's peak resident set (weights, optimizer, activations)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux

    def export_weights(self) -> Optional[dict[str, torch.Tensor]]:
        """Collective. Full CPU weights on rank 0 (tied ``lm_head.weight`` included explicitly; with LoRA, the adapters
        merged into them), None elsewhere."""
        state = self.backend.full_state_dict()
        return None if state is None else self._plain_weights(state)

    def _plain_weights(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The module's full state -> the plain model's weights: adapters merged, a tied output layer spelled out."""
        if self.lora is not None:
            state = merge_state(state, self.lora.scaling)
        if "lm_head.weight" not in state and "model.embed_tokens.weight" in state:
            # Tied embeddings: vLLM keeps its own output layer, which stays stale unless it is sent too.
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
        return state

    def save_hf(self, path: str, source_model_path: str) -> None:
        """Collective. Rank 0 writes the policy in Hugging Face format (+ the tokenizer), loadable by vLLM. With LoRA:
        a peft adapter directory at ``path`` instead, or, with ``model.lora.export_merged``, the merged model at
        ``path`` and the adapter in ``path/adapter``."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        state = self.backend.full_state_dict()  # the one collective: every rank takes part, rank 0 writes
        if state is None:
            return
        if self.lora is not None:
            save_adapter(f"{path}/adapter" if self.lora.export_merged else path, state, self.lora, source_model_path)
            if not self.lora.export_merged:
                AutoTokenizer.from_pretrained(source_model_path).save_pretrained(path)
                return
        state = self._plain_weights(state)

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source_model_path))
        model.load_state_dict(state, assign=True)
        model.tie_weights()
        model.save_pretrained(path)
        AutoTokenizer.from_pretrained(source_model_path).save_pretrained(path)
        for head in self.heads:  # beside the HF weights: each head and how to apply it
            head.export(path)

    def load_head_exports(self, path: str) -> None:
        """Heads saved beside exported HF weights (by ``save_hf``), e.g. for evaluation."""
        for head in self.heads:
            head.load_export(path)

    def save_checkpoint(self, path: str) -> None:
        """Collective: ``path/policy`` (weights + optimizer, backend format), ``path/reference``, and the heads with
        their optimizers (``path/heads.pt``, written by rank 0: they are the same on every rank)."""
        self.backend.save_checkpoint(f"{path}/policy")
        if self.heads and self.rank == 0:
            torch.save({h.name: h.state_dict() for h in self.heads}, f"{path}/heads.pt")
        if self.reference is not None:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_model_state_dict

            reshard(self.reference)
            dcp.save({"model": get_model_state_dict(self.reference)}, checkpoint_id=f"{path}/reference")

    def load_checkpoint(self, path: str) -> None:
        self.backend.load_checkpoint(f"{path}/policy")
        if self.heads:
            states = torch.load(f"{path}/heads.pt", map_location=self.device)
            for head in self.heads:
                head.load_state_dict(states[head.name])
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
            raise RuntimeError("reset_reference called but this learner has no reference model of its own (kl_coef "
                               "== 0, or LoRA, whose reference is the base model)")
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
        self.backend.shutdown()
        if dist.is_initialized():
            dist.destroy_process_group()

