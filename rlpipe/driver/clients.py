"""The driver's clients of the role groups: how work is spread over a group's workers, what is re-queued when a
worker dies, and how results are put back in order. Each holds an ``ActorGroup``; none runs inside a worker."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch

from rlpipe.driver.actors import ActorGroup, run_with_requeue
from rlpipe.learner.batch import SampleShard
from rlpipe.learner.objective import GlobalCounts
from rlpipe.rollout.types import Completion, GenerationRequest, SamplingSettings
from rlpipe.verify.types import Verdict

if TYPE_CHECKING:
    from rlpipe.driver.collect import Rollouts
    from rlpipe.learner.stages import PreferenceSettings
    from rlpipe.tasks.conversations import SupervisedExample
    from rlpipe.tasks.preference_pairs import PreferencePair

log = logging.getLogger(__name__)


def _round_robin(items: Sequence, n: int) -> list[list]:
    return [list(items[i::n]) for i in range(n)]


@dataclass
class PendingGeneration:
    """A generate call in flight: its chunks, one per engine, and each chunk's policy version (the weights the engine
    will have loaded when it reaches the call: its tasks run in submission order)."""

    requests: list[GenerationRequest]
    sampling: SamplingSettings
    chunks: list[list[GenerationRequest]]
    handles: list  # per engine with a chunk: a Ray ObjectRef, or the result in local mode
    engines: list[int]
    versions: list[int]


class RolloutClient:
    """The rollout engines: requests spread round-robin, completions back in request order, each stamped with the
    policy version that generated it. An engine that dies in any call (generate, weight push, sleep, wake) is
    restarted, given the current weights, and its share re-run.

    Weight pushes do not wait: an engine runs its calls in order, so a generate call submitted after a push is served
    by the pushed weights, and one submitted before it by the previous ones (every sample has one version). A push
    that failed is found, and its engine restarted, at the next wait.
    """

    def __init__(self, group: ActorGroup):
        self.group = group
        self.faults: Counter = Counter()  # restarts and re-queued requests, read (and reset) by the trainer
        # The last weights pushed: a restarted engine starts from the initial checkpoint and must get them again.
        self._weights: Any = None
        self.version = 0  # policy version of the last weights pushed (= learner updates so far)
        self._engine_version = [0] * group.size
        self._pushes: list[tuple[int, Any]] = []  # (engine, handle) of pushes not yet known to have finished
        self._incarnation: list = []  # which process each engine is (``started``): one death, one restart

    def started(self) -> None:
        """Call once the engines are built: remembers which process each one is."""
        self._incarnation = self.group.incarnations()

    def _recover(self, index: int) -> None:
        """After a call to engine ``index`` failed because it died: wait for its restart, and the first time this
        restart is seen, count it and give the engine the current weights. Several calls lost with one death (a
        push and the rounds queued behind it) make one restart."""
        token = self.group.wait_until_alive(index)
        if token != self._incarnation[index]:
            self._incarnation[index] = token
            self.faults[f"{self.group.name}_restarts"] += 1
            self._restore_weights(index)

    def submit(self, requests: Sequence[GenerationRequest], sampling: SamplingSettings) -> PendingGeneration:
        chunks = [c for c in _round_robin(list(requests), self.group.size)]
        engines = [i for i, c in enumerate(chunks) if c]
        handles = [self.group.submit_to(i, "generate", chunks[i], sampling) for i in engines]
        return PendingGeneration(list(requests), sampling, chunks, handles, engines,
                                 [self._engine_version[i] for i in engines])

    def wait(self, pending: PendingGeneration) -> list[Completion]:
        """The completions of ``pending`` in request order; a chunk whose engine died is re-run on the restarted
        engine (with the current weights: its version is then the current one)."""
        self._settle_pushes()
        parts: dict[int, list[Completion]] = {}
        todo = list(zip(pending.engines, pending.handles, pending.versions))
        while todo:
            results, died = self.group.settle([h for _, h, _ in todo], "generate", indices=[i for i, _, _ in todo])
            again = []
            for pos, (i, _, version) in enumerate(todo):
                if pos not in died:
                    for c in results[pos]:
                        c.policy_version = version
                    parts[i] = results[pos]
                    continue
                log.warning("%s; re-queueing its %d request(s) on the restarted engine", died[pos],
                            len(pending.chunks[i]))
                self.faults[f"{self.group.name}_requeued"] += len(pending.chunks[i])
                self._recover(i)
                again.append((i, self.group.submit_to(i, "generate", pending.chunks[i], pending.sampling),
                              self._engine_version[i]))
            todo = again
        completions = [c for i in sorted(parts) for c in parts[i]]
        order = {r.request_id: k for k, r in enumerate(pending.requests)}
        completions.sort(key=lambda c: (order[c.request_id], c.sample_index))
        return completions

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingSettings) -> list[Completion]:
        return self.wait(self.submit(requests, sampling))

    def push_weights(self, weights_handle: Any, version: int) -> None:
        """Give every engine new weights (policy ``version``) without waiting for them to load."""
        self._weights, self.version = weights_handle, version
        for i in range(self.group.size):
            self._pushes.append((i, self.group.submit_to(i, "load_weights", weights_handle)))
            self._engine_version[i] = version

    def load_weights(self, weights_handle: Any, version: int) -> None:
        """``push_weights``, then wait until every engine has them (a resume, before anything is generated)."""
        self.push_weights(weights_handle, version)
        self._settle_pushes()

    def _settle_pushes(self) -> None:
        """Wait for the pushes in flight; an engine that died loading weights is restarted and given them again."""
        pushes, self._pushes = self._pushes, []
        if not pushes:
            return
        _, died = self.group.settle([h for _, h in pushes], "load_weights", indices=[i for i, _ in pushes])
        for pos in sorted(died):
            log.warning("%s; restarting it and pushing the weights again", died[pos])
            self._recover(pushes[pos][0])

    def sleep(self) -> None:
        """Free the engines' device memory (vLLM sleep mode; a no-op on CPU) while the learner uses the devices."""
        self._settle_pushes()
        self._on_every_engine("sleep")

    def wake_up(self) -> None:
        self._on_every_engine("wake_up")

    def _on_every_engine(self, method: str, *args: Any) -> None:
        """``method(*args)`` on every engine; one that dies is restarted (with the current weights) and asked
        again, until it answers or its restarts are used up (then the call fails naming it)."""
        todo = list(range(self.group.size))
        while todo:
            _, died = self.group.settle([self.group.submit_to(i, method, *args) for i in todo], method, indices=todo)
            again = []
            for pos, i in enumerate(todo):
                if pos in died:
                    log.warning("%s; restarting it and repeating %s", died[pos], method)
                    self._recover(i)
                    again.append(i)
            todo = again

    def _restore_weights(self, index: int) -> None:
        """A restarted engine gets the last pushed weights (it may die again doing so: then it is restarted again)."""
        while self._weights is not None:
            _, died = self.group.settle([self.group.submit_to(index, "load_weights", self._weights)], "load_weights",
                                        indices=[index])
            if not died:
                break
            log.warning("%s; restarting it again", died[0])
            self.faults[f"{self.group.name}_restarts"] += 1
            self._incarnation[index] = self.group.wait_until_alive(index)
        self._engine_version[index] = self.version


class VerifierClient:
    """Scores completions on the verifier workers; timeouts and infra errors are retried, then dropped (counted).
    A verifier worker that dies is restarted and its share re-scored."""

    def __init__(self, group: ActorGroup, max_retries: int):
        self.group = group
        self.max_retries = max_retries
        self.faults: Counter = Counter()

    def score(self, items: Sequence[tuple[Optional[str], dict]]) -> tuple[list[Verdict | None], Counter]:
        """Verdicts in input order (None: still timeout/error after the retries, dropped) and counts of first-try
        verdict kinds plus ``retried`` and ``dropped``. An item whose text is None (a rollout a tool could not serve:
        ``Completion.scorable_text``) is not scored: None, counted as ``tool_infra_dropped``."""
        verdicts: list[Verdict | None] = [None] * len(items)
        pending = [j for j, (text, _) in enumerate(items) if text is not None]
        counts: Counter = Counter()
        counts["tool_infra_dropped"] = len(items) - len(pending)
        if not pending:
            return verdicts, counts
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
            if not still or attempt == self.max_retries:
                break
            counts["retried"] += len(still)  # scored again in the next attempt
            pending = still
        counts["dropped"] = sum(v is None for v in verdicts) - counts["tool_infra_dropped"]
        if counts["dropped"]:
            log.warning("verifier: %d/%d samples still timed out or errored after %d retries; dropped from the batch",
                        counts["dropped"], len(items), self.max_retries)
        return verdicts, counts


def shard_plan(lengths: Sequence[int], updates_per_step: int, dp_size: int) -> list[list[tuple[int, int]]]:
    """Which samples each learner rank trains, and in which mini-batch: per rank, (sample index or -1, mini-batch).

    ``lengths [N]``: each sample's tokens (prompt + response). The step's N samples are split into
    ``updates_per_step`` contiguous mini-batches (one optimizer step each); each mini-batch is padded to a multiple of
    ``dp_size`` with rows that carry no tokens (-1: every rank must run the same number of forward passes for FSDP's
    collectives) and dealt over the ranks longest first, in snake order (0, 1, 1, 0, 0, 1, ...). So every rank gets
    the same number of samples and nearly the same number of tokens, and its k-th micro-batch (a rank sorts its rows
    by length) is about as long as every other rank's: ranks wait for each other at each collective, and a rank with
    longer samples would hold all of them up (the balancing verl calls ``balance_batch``).
    """
    plan: list[list[tuple[int, int]]] = [[] for _ in range(dp_size)]
    num_samples = len(lengths)
    num_minibatches = min(updates_per_step, num_samples)
    for mb, rows in enumerate(torch.arange(num_samples).tensor_split(num_minibatches)):
        rows = sorted(rows.tolist(), key=lambda i: -lengths[i])  # stable: equal lengths keep sample order
        padded = rows + [-1] * ((-len(rows)) % dp_size)
        for position, i in enumerate(padded):
            turn, seat = divmod(position, dp_size)
            plan[seat if turn % 2 == 0 else dp_size - 1 - seat].append((int(i), mb))
    return plan


class LearnerClient:
    """All learner ranks. A step's samples go to the ranks once (``prepare``); only per-sample quantities come back
    and only advantages go out again (``update``)."""

    def __init__(self, group: ActorGroup, updates_per_step: int):
        self.group = group
        self.dp_size = group.size
        self.updates_per_step = updates_per_step
        self._plan: list[list[tuple[int, int]]] = []
        self._counts: list[GlobalCounts] = []

    def prepare(self, rollouts: "Rollouts", loss_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Send each rank its share of ``rollouts`` (``loss_mask [N]``: samples that get a loss); the ranks compute
        old/reference logprobs and head scores and keep the share. Returns per-sample quantities, [N] each (see
        ``LearnerRank.prepare``), and the ``*_seconds`` timings summed over ranks."""
        n = len(rollouts.completions)
        lengths = [len(rollouts.requests[int(g)].prompt_ids) + len(c.response_ids)
                   for g, c in zip(rollouts.group_index, rollouts.completions)]
        self._plan = shard_plan(lengths, self.updates_per_step, self.dp_size)
        shards = [_shard(rollouts, loss_mask, rows) for rows in self._plan]
        results = self.group.call("prepare", [(s,) for s in shards])
        merged: dict[str, torch.Tensor] = {}
        for rows, result in zip(self._plan, results):
            index = torch.tensor([i for i, _ in rows])
            real = index >= 0
            for key, values in result.items():
                if key.endswith("_seconds"):  # [1] per rank: summed
                    merged[key] = merged.get(key, torch.zeros(1)) + values
                    continue
                merged.setdefault(key, torch.zeros(n, dtype=values.dtype))[index[real]] = values[real]
        # The loss's global counts: the tokens each sample trains after the off-policy correction's mask.
        trained = merged["trained_tokens"].long()
        self._counts = [GlobalCounts.of_lengths(trained[rows], torch.ones(len(rows), dtype=torch.bool), self.dp_size)
                        for rows in torch.arange(n).tensor_split(min(self.updates_per_step, n))]
        return merged

    def update(self, advantages: torch.Tensor) -> dict[str, float]:
        """The optimizer steps on the prepared samples with ``advantages [N]``; metrics averaged over ranks."""
        per_rank = []
        for rows in self._plan:
            index = torch.tensor([i for i, _ in rows])
            per_rank.append((torch.where(index >= 0, advantages[index.clamp(min=0)], 0.0), self._counts))
        return _combine(self.group.call("update", per_rank))

    def supervised_update(self, examples: Sequence["SupervisedExample"], lr: float) -> dict[str, float]:
        """One SFT optimizer step on ``examples`` (the global batch, dealt over the ranks by tokens) at ``lr``."""
        counts = GlobalCounts(num_tokens=max(1, sum(e.loss_tokens for e in examples)),
                              num_seqs=max(1, len(examples)), dp_size=self.dp_size)
        plan = shard_plan([e.num_tokens for e in examples], 1, self.dp_size)
        return _combine(self.group.call("supervised_update",
                                        [(_supervised_shard(examples, rows), counts, lr) for rows in plan]))

    def supervised_loss(self, examples: Sequence["SupervisedExample"]) -> float:
        """The token-mean next-token loss of ``examples``' trained tokens under the current weights."""
        plan = shard_plan([e.num_tokens for e in examples], 1, self.dp_size)
        results = self.group.call("supervised_loss", [(_supervised_shard(examples, rows),) for rows in plan])
        return sum(r["nll_sum"] for r in results) / max(1.0, sum(r["tokens"] for r in results))

    def preference_update(self, pairs: Sequence["PreferencePair"], lr: float,
                          settings: "PreferenceSettings") -> dict[str, float]:
        """One preference-optimisation step on ``pairs`` (the global batch; whole pairs dealt over the ranks by
        tokens) at ``lr``."""
        plan = shard_plan([p.num_tokens for p in pairs], 1, self.dp_size)
        return _combine(self.group.call("preference_update", [(_preference_shard(pairs, rows), len(pairs), lr,
                                                               settings) for rows in plan]))

    def preference_loss(self, pairs: Sequence["PreferencePair"], settings: "PreferenceSettings") -> dict[str, float]:
        """The pair loss and its metrics (means over ``pairs``) under the current weights, without an update."""
        plan = shard_plan([p.num_tokens for p in pairs], 1, self.dp_size)
        return _combine(self.group.call("preference_loss", [(_preference_shard(pairs, rows), len(pairs), settings)
                                                            for rows in plan]))

    def export_weights(self) -> Any:
        """Gather full weights (collective over ranks); returns rank 0's handle (a Ray ObjectRef in Ray mode)."""
        handles = self.group.submit("export_weights")
        # The other ranks only take part in the gather.
        self.group.get(handles[1:], "export_weights", indices=range(1, self.dp_size))
        return handles[0]

    def save_hf(self, path: str, source_model_path: str) -> None:
        self.group.call("save_hf", [(path, source_model_path)] * self.dp_size)

    def load_head_exports(self, path: str) -> None:
        self.group.call("load_head_exports", [(path,)] * self.dp_size)

    def save_checkpoint(self, path: str) -> None:
        self.group.call("save_checkpoint", [(path,)] * self.dp_size)

    def load_checkpoint(self, path: str) -> None:
        self.group.call("load_checkpoint", [(path,)] * self.dp_size)

    def reset_reference(self, reset_optimizer: bool) -> dict[str, float]:
        return self.group.call("reset_reference", reset_optimizer=reset_optimizer)[0]


def _shard(rollouts: "Rollouts", loss_mask: torch.Tensor, rows: Sequence[tuple[int, int]]) -> SampleShard:
    """One rank's rows as a SampleShard: each prompt once; padding rows (-1) repeat the rank's last real sample (its
    shortest, as shard_plan deals them), with no loss."""
    filler = next((i for i, _ in reversed(rows) if i >= 0), 0)
    samples = [(i if i >= 0 else filler, mb, i >= 0) for i, mb in rows]
    groups = [int(rollouts.group_index[i]) for i, _, _ in samples]
    unique = sorted(set(groups))
    slot = {g: k for k, g in enumerate(unique)}
    completions = [rollouts.completions[i] for i, _, _ in samples]
    return SampleShard.build(
        prompts=[rollouts.requests[g].prompt_ids for g in unique],
        prompt_index=[slot[g] for g in groups],
        responses=[c.response_ids for c in completions],
        logprobs=[c.logprobs for c in completions],
        loss_mask=[bool(loss_mask[i]) and real for i, _, real in samples],
        minibatch=[mb for _, mb, _ in samples],
        outcome=[float(rollouts.correct[i]) for i, _, _ in samples],
        format_ok=[not bool(rollouts.parse_failed[i]) for i, _, _ in samples],
        token_masks=[c.token_mask for c in completions],
    )


def _combine(results: Sequence[dict[str, float]]) -> dict[str, float]:
    """Ranks report shares of global means (averaged here) and local maxima ("*_max", the maximum here)."""
    return {k: max(r[k] for r in results) if k.endswith("_max") else sum(r[k] for r in results) / len(results)
            for k in results[0]}


def _supervised_shard(examples: Sequence["SupervisedExample"], rows: Sequence[tuple[int, int]]) -> SampleShard:
    """One rank's supervised examples; padding rows (-1) repeat its last real one, with no loss."""
    filler = next((i for i, _ in reversed(rows) if i >= 0), 0)
    chosen = [examples[i if i >= 0 else filler] for i, _ in rows]
    return SampleShard.supervised([e.prompt_ids for e in chosen], [e.response_ids for e in chosen],
                                  [e.response_mask for e in chosen], [i >= 0 for i, _ in rows])


def _preference_shard(pairs: Sequence["PreferencePair"], rows: Sequence[tuple[int, int]]) -> SampleShard:
    """One rank's pairs: pair k is prompt k with its chosen response at row 2k and its rejected one at 2k+1; padding
    pairs (-1) repeat the rank's last real pair, with no loss."""
    filler = next((i for i, _ in reversed(rows) if i >= 0), 0)
    chosen = [pairs[i if i >= 0 else filler] for i, _ in rows]
    real = [i >= 0 for i, _ in rows]
    n = 2 * len(chosen)
    return SampleShard.build(
        prompts=[p.prompt_ids for p in chosen], prompt_index=[k // 2 for k in range(n)],
        responses=[r for p in chosen for r in (p.chosen_ids, p.rejected_ids)],
        logprobs=[[0.0] * len(r) for p in chosen for r in (p.chosen_ids, p.rejected_ids)],
        loss_mask=[ok for ok in real for _ in range(2)], minibatch=[0] * n, outcome=[0.0] * n, format_ok=[True] * n)
