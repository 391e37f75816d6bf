"""Driver-side views of the role groups: how work is spread over workers and results are put back in order."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Sequence

import torch

from rlpipe.driver.groups import Group
from rlpipe.learner.batch import TrainBatch, pad_to_multiple, split_even
from rlpipe.learner.objective import GlobalCounts
from rlpipe.rollout.types import Completion, GenerationRequest, SamplingSettings
from rlpipe.verify.types import Verdict

log = logging.getLogger(__name__)


def _round_robin(items: Sequence, n: int) -> list[list]:
    return [list(items[i::n]) for i in range(n)]


class RolloutPool:
    def __init__(self, group: Group):
        self.group = group

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingSettings) -> list[Completion]:
        chunks = [c for c in _round_robin(requests, self.group.size)]
        handles = [self.group.submit_to(i, "generate", chunk, sampling) for i, chunk in enumerate(chunks) if chunk]
        completions = [c for part in self.group.get(handles, "generate") for c in part]
        order = {r.request_id: i for i, r in enumerate(requests)}
        completions.sort(key=lambda c: (order[c.request_id], c.sample_index))
        return completions

    def load_weights(self, weights_handle: Any) -> None:
        self.group.get(self.group.submit("load_weights", [(weights_handle,)] * self.group.size), "load_weights")


class VerifierPool:
    """Scores completions on the verifier workers; timeouts and infra errors are retried, then dropped (counted)."""

    def __init__(self, group: Group, max_retries: int):
        self.group = group
        self.max_retries = max_retries

    def score(self, items: Sequence[tuple[str, dict]]) -> tuple[list[Verdict | None], Counter]:
        """Verdicts in input order (None: still timeout/error after the retries, dropped) and counts of first-try
        verdict kinds plus ``retried`` and ``dropped``."""
        verdicts: list[Verdict | None] = [None] * len(items)
        pending = list(range(len(items)))
        counts: Counter = Counter()
        for attempt in range(self.max_retries + 1):
            chunks = [c for c in _round_robin(pending, self.group.size) if c]
            handles = [self.group.submit_to(i, "score_batch", [items[j] for j in chunk]) for i, chunk in enumerate(chunks)]
            still = []
            for chunk, result in zip(chunks, self.group.get(handles, "score_batch")):
                for j, v in zip(chunk, result):
                    if attempt == 0:
                        counts[v.kind.value] += 1
                    if v.rewardable:
                        verdicts[j] = v
                    else:
                        still.append(j)
            if not still:
                break
            counts["retried"] += len(still)
            pending = still
        counts["dropped"] = sum(v is None for v in verdicts)
        if counts["dropped"]:
            log.warning("verifier: %d/%d samples still timed out or errored after %d retries; dropped from the batch",
                        counts["dropped"], len(items), self.max_retries)
        return verdicts, counts


class LearnerGroup:
    """All learner ranks. Shards batches evenly (padding rows carry no tokens) and passes global counts."""

    def __init__(self, group: Group, updates_per_step: int):
        self.group = group
        self.dp_size = group.size
        self.updates_per_step = updates_per_step

    def _shards(self, batch: TrainBatch) -> list[TrainBatch]:
        return split_even(pad_to_multiple(batch, self.dp_size), self.dp_size)

    def compute_logprobs(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        """Old and reference logprobs for every row of ``batch`` ([N, T] each)."""
        results = self.group.call("compute_logprobs", [(s,) for s in self._shards(batch)])
        merged = {k: torch.cat([r[k] for r in results])[: batch.num_samples] for k in results[0]}
        return merged

    def update(self, batch: TrainBatch) -> dict[str, float]:
        """``updates_per_step`` optimizer steps, one per contiguous mini-batch; metrics averaged over ranks."""
        per_rank: list[list] = [[] for _ in range(self.dp_size)]
        for minibatch in split_even(batch, min(self.updates_per_step, batch.num_samples)):
            counts = GlobalCounts.of(minibatch.response_mask, self.dp_size)
            for rank, shard in enumerate(self._shards(minibatch)):
                per_rank[rank].append((shard, counts))
        results = self.group.call("update", [(mbs,) for mbs in per_rank])
        return {k: sum(r[k] for r in results) / len(results) for k in results[0]}

    def export_weights(self) -> Any:
        """Gather full weights (collective over ranks); returns rank 0's handle (a Ray ObjectRef in Ray mode)."""
        handles = self.group.submit("export_weights")
        self.group.get(handles[1:], "export_weights")  # the other ranks only take part in the gather
        return handles[0]

    def save_hf(self, path: str, source_model_path: str) -> None:
        self.group.call("save_hf", [(path, source_model_path)] * self.dp_size)

    def save_checkpoint(self, path: str) -> None:
        self.group.call("save_checkpoint", [(path,)] * self.dp_size)

    def load_checkpoint(self, path: str) -> None:
        self.group.call("load_checkpoint", [(path,)] * self.dp_size)

    def reset_reference(self, reset_optimizer: bool) -> dict[str, float]:
        return self.group.call("reset_reference", reset_optimizer=reset_optimizer)[0]


