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


def run_with_requeue(group: Group, method: str, chunks: Sequence[list], args: tuple, faults: Counter,
                     on_restart=None) -> list[list]:
    """``method(chunk, *args)`` on worker i for chunk i; a chunk whose worker died is re-run on the restarted worker.

    Results come back only from calls that finished, so a re-run chunk is counted once: nothing is lost and
    nothing duplicated. ``on_restart(i)`` runs after worker i came back (e.g. to give it the current weights).
    A worker whose restarts are used up makes the call fail.
    """
    results: list = [None] * len(chunks)
    todo = [i for i, c in enumerate(chunks) if c]
    for i, c in enumerate(chunks):
        if not c:
            results[i] = []
    while todo:
        handles = [group.submit_to(i, method, chunks[i], *args) for i in todo]
        out, died = group.settle(handles, method, indices=todo)
        again = []
        for pos, i in enumerate(todo):
            if pos in died:
                log.warning("%s; re-queueing its %d item(s) on the restarted worker", died[pos], len(chunks[i]))
                faults[f"{group.name}_restarts"] += 1
                faults[f"{group.name}_requeued"] += len(chunks[i])
                group.wait_until_alive(i)
                if on_restart is not None:
                    on_restart(i)
                again.append(i)
            else:
                results[i] = out[pos]
        todo = again
    return results


class RolloutPool:
    def __init__(self, group: Group):
        self.group = group
        self.faults: Counter = Counter()  # restarts and re-queued requests, read (and reset) by the trainer
        # The last weights pushed: a restarted engine starts from the initial checkpoint and must get them again.
        self._weights: Any = None

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingSettings) -> list[Completion]:
        chunks = _round_robin(requests, self.group.size)
        parts = run_with_requeue(self.group, "generate", chunks, (sampling,), self.faults, self._restore_weights)
        completions = [c for part in parts for c in part]
        order = {r.request_id: i for i, r in enumerate(requests)}
        completions.sort(key=lambda c: (order[c.request_id], c.sample_index))
        return completions

    def load_weights(self, weights_handle: Any) -> None:
        self._weights = weights_handle
        self.group.get(self.group.submit("load_weights", [(weights_handle,)] * self.group.size), "load_weights")

    def sleep(self) -> None:
        """Free the engines' device memory (vLLM sleep mode; a no-op on CPU) while the learner uses the devices."""
        self.group.call("sleep")

    def wake_up(self) -> None:
        self.group.call("wake_up")

    def _restore_weights(self, index: int) -> None:
        if self._weights is not None:
            self.group.get([self.group.submit_to(index, "load_weights", self._weights)], "load_weights",
                           indices=[index])


class VerifierPool:
    """Scores completions on the verifier workers; timeouts and infra errors are retried, then dropped (counted).
    A verifier worker that dies is restarted and its share re-scored."""

    def __init__(self, group: Group, max_retries: int):
        self.group = group
        self.max_retries = max_retries
        self.faults: Counter = Counter()

    def score(self, items: Sequence[tuple[str, dict]]) -> tuple[list[Verdict | None], Counter]:
        """Verdicts in input order (None: still timeout/error after the retries, dropped) and counts of first-try
        verdict kinds plus ``retried`` and ``dropped``."""
        verdicts: list[Verdict | None] = [None] * len(items)
        pending = list(range(len(items)))
        counts: Counter = Counter()
        for attempt in range(self.max_retries + 1):
            chunks = _round_robin(pending, self.group.size)
            results = run_with_requeue(self.group, "score_batch", [[items[j] for j in c] for c in chunks], (),
                                       self.faults)
            still = []
            for chunk, result in zip(chunks, results):
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
        # The other ranks only take part in the gather.
        self.group.get(handles[1:], "export_weights", indices=range(1, self.dp_size))
        return handles[0]

    def save_hf(self, path: str, source_model_path: str) -> None:
        self.group.call("save_hf", [(path, source_model_path)] * self.dp_size)

    def save_checkpoint(self, path: str) -> None:
        self.group.call("save_checkpoint", [(path,)] * self.dp_size)

    def load_checkpoint(self, path: str) -> None:
        self.group.call("load_checkpoint", [(path,)] * self.dp_size)

    def reset_reference(self, reset_optimizer: bool) -> dict[str, float]:
        return self.group.call("reset_reference", reset_optimizer=reset_optimizer)[0]


