"""The training batch: prompts left-padded, responses right-padded, so every response starts at column P.

Layout, with N samples, P = longest prompt, T = longest response:

    input_ids       [N, P+T]  pad ... pad p_0 .. p_k | r_0 .. r_m pad ... pad
    attention_mask  [N, P+T]  False on pads
    position_ids    [N, P+T]  0.. counted over real tokens only (what the rollout engine saw)
    response_mask   [N, T]    True on real response tokens; logprobs[:, t] is the logprob of input_ids[:, P+t]

Response-aligned tensors ([N, T]) line up column by column with the rollout engine's logprobs.

What travels from the driver to a learner rank is a ``SampleShard``: ragged token ids with no padding, each prompt
once however many samples continue it. The rank lays it out as TrainBatches itself and keeps it until the update,
so a step's samples cross the Ray boundary once (docs/design.md, "the road of one step").
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import torch

if TYPE_CHECKING:
    from rlpipe.learner.packing import PackedLayout


@dataclass
class TrainBatch:
    input_ids: torch.Tensor  # [N, P+T] long
    attention_mask: torch.Tensor  # [N, P+T] bool
    position_ids: torch.Tensor  # [N, P+T] long
    response_mask: torch.Tensor  # [N, T] bool
    rollout_logprobs: torch.Tensor  # [N, T] behaviour logprobs from the rollout engine
    advantages: Optional[torch.Tensor] = None  # [N]
    old_logprobs: Optional[torch.Tensor] = None  # [N, T]
    ref_logprobs: Optional[torch.Tensor] = None  # [N, T]
    is_weights: Optional[torch.Tensor] = None  # [N, T] off-policy importance weights (rlpipe.algos.offpolicy)
    outcome: Optional[torch.Tensor] = None  # [N] float: 1 if the verifier judged the sample correct, else 0
    format_ok: Optional[torch.Tensor] = None  # [N] bool: an answer could be extracted (auxiliary heads' labels)
    # The same samples as one padding-free stream (rlpipe.learner.packing): forwards read it instead of input_ids.
    packed: Optional["PackedLayout"] = None

    @property
    def num_samples(self) -> int:
        return self.input_ids.shape[0]

    @property
    def prompt_len(self) -> int:
        return self.input_ids.shape[1] - self.response_mask.shape[1]

    def select(self, index: torch.Tensor | slice) -> "TrainBatch":
        return replace(self, **{f.name: _take(getattr(self, f.name), index) for f in fields(self)})

    def to(self, device: torch.device | str) -> "TrainBatch":
        return replace(self, **{f.name: _move(getattr(self, f.name), device) for f in fields(self)})


def _take(t: Optional[torch.Tensor], index):
    if t is not None and not isinstance(t, torch.Tensor):
        raise TypeError("a packed TrainBatch cannot be sliced: pack the rows you want instead")
    return None if t is None else t[index]


def _move(t: Optional[torch.Tensor], device):
    return None if t is None else t.to(device)


def build_batch(
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    rollout_logprobs: Sequence[Sequence[float]],
    pad_id: int,
) -> TrainBatch:
    """Pack N (prompt, response) pairs into a TrainBatch (see the module docstring for the layout)."""
    n = len(prompt_ids)
    p = max(len(x) for x in prompt_ids)
    t = max(1, max(len(x) for x in response_ids))
    input_ids = torch.full((n, p + t), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, p + t), dtype=torch.bool)
    response_mask = torch.zeros((n, t), dtype=torch.bool)
    logprobs = torch.zeros((n, t), dtype=torch.float32)
    for i, (prompt, response, lp) in enumerate(zip(prompt_ids, response_ids, rollout_logprobs)):
        input_ids[i, p - len(prompt) : p] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[i, p - len(prompt) : p] = True
        if response:
            input_ids[i, p : p + len(response)] = torch.tensor(response, dtype=torch.long)
            attention_mask[i, p : p + len(response)] = True
            response_mask[i, : len(response)] = True
            logprobs[i, : len(response)] = torch.tensor(lp, dtype=torch.float32)
    position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
    return TrainBatch(input_ids, attention_mask, position_ids, response_mask, logprobs)


def pad_to_multiple(batch: TrainBatch, multiple: int) -> TrainBatch:
    """Append copies of row 0 with an all-False response mask until N is a multiple of ``multiple``.

    Every learner rank must run the same number of forward passes (FSDP collectives), so shards must be equal;
    padding rows carry no tokens in any loss or count.
    """
    extra = (-batch.num_samples) % multiple
    if extra == 0:
        return batch
    filler = batch.select(torch.zeros(extra, dtype=torch.long))
    filler.response_mask = torch.zeros_like(filler.response_mask)
    return concat([batch, filler])


def concat(batches: Sequence[TrainBatch]) -> TrainBatch:
    first = batches[0]
    out = {}
    for f in fields(first):
        parts = [getattr(b, f.name) for b in batches]
        out[f.name] = None if any(x is None for x in parts) else torch.cat(parts)
    return TrainBatch(**out)


def split_even(batch: TrainBatch, num_parts: int) -> list[TrainBatch]:
    """Split into ``num_parts`` contiguous parts whose sizes differ by at most one (N must be ≥ num_parts)."""
    return [batch.select(idx) for idx in torch.arange(batch.num_samples).tensor_split(num_parts)]


def num_micro_batches(num_samples: int, micro_batch_samples: int) -> int:
    return max(1, math.ceil(num_samples / micro_batch_samples))


def padded_tokens(prompt_lengths: Sequence[int], response_lengths: Sequence[int]) -> int:
    """Tokens one micro-batch of these rows costs in the padded layout: rows × (longest prompt + longest response)."""
    if not len(prompt_lengths):
        return 0
    return len(prompt_lengths) * (max(prompt_lengths) + max(1, max(response_lengths)))


Cost = Callable[[int, int], int]  # cost(start, stop): the tokens a micro-batch of items start..stop-1 costs


def padded_cost(prompt_lengths: Sequence[int], response_lengths: Sequence[int]) -> Cost:
    """Items are samples laid out padded (``build_batch``)."""
    return lambda a, b: padded_tokens(prompt_lengths[a:b], response_lengths[a:b])


def summed_cost(tokens: Sequence[int]) -> Cost:
    """Items are packed units (``rlpipe.learner.packing``): a micro-batch costs the sum of their tokens."""
    prefix = [0, *itertools.accumulate(tokens)]
    return lambda a, b: prefix[b] - prefix[a]


def capped_cost(cost: Cost, item_samples: Sequence[int], max_samples: int) -> Cost:
    """``cost``, but a micro-batch of more than ``max_samples`` samples (``item_samples``: samples per item) costs more
    than any budget, so cuts keep both limits (every item must itself hold at most ``max_samples``)."""
    prefix = [0, *itertools.accumulate(item_samples)]
    over = 2 ** 62
    return lambda a, b: over if prefix[b] - prefix[a] > max_samples else cost(a, b)


def _groups_under(num_items: int, cost: Cost, budget: int) -> list[int]:
    """Greedy cut of items 0..num_items-1 (sorted by length): each group grows while its cost stays ≤ ``budget`` (an
    item over it stands alone). Returns the groups' end indices."""
    ends, start = [], 0
    for i in range(1, num_items):
        if cost(start, i + 1) > budget:
            ends.append(i)
            start = i
    ends.append(num_items)
    return ends


def count_token_budget_groups(num_items: int, cost: Cost, budget: int) -> int:
    """How many micro-batches items (sorted by length) need so that none costs more than ``budget`` tokens (an item
    over the budget alone is one micro-batch)."""
    return len(_groups_under(num_items, cost, budget)) if num_items else 0


def split_by_tokens(num_items: int, cost: Cost, num_groups: int) -> list[range]:
    """Exactly ``num_groups`` contiguous groups of items (sorted by length; ``num_groups`` ≤ items) whose largest cost
    is as small as a greedy cut can make it: the smallest budget whose greedy cut needs ≤ ``num_groups`` groups
    (binary search), then the costliest groups are halved until there are ``num_groups``. Every rank must run the same
    number of micro-batches (FSDP's collectives), so the count comes from outside and the budget is derived here."""
    if not 1 <= num_groups <= max(1, num_items):
        raise ValueError(f"cannot split {num_items} rows into {num_groups} micro-batches")
    if num_items == 0:
        return [range(0, 0)]
    low, high = max(cost(i, i + 1) for i in range(num_items)), cost(0, num_items)
    while low < high:
        mid = (low + high) // 2
        if len(_groups_under(num_items, cost, mid)) <= num_groups:
            high = mid
        else:
            low = mid + 1
    starts = [0, *_groups_under(num_items, cost, low)]
    groups = [range(a, b) for a, b in zip(starts, starts[1:])]
    while len(groups) < num_groups:
        k = max((i for i, g in enumerate(groups) if len(g) > 1), key=lambda i: cost(groups[i].start, groups[i].stop))
        g = groups[k]
        middle = g.start + len(g) // 2
        groups[k: k + 1] = [range(g.start, middle), range(middle, g.stop)]
    return groups


def _flat(rows: Sequence[Sequence], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int32)
    values = torch.tensor([x for r in rows for x in r], dtype=dtype)
    return values, lengths


def _token_ids(rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat token ids in the narrowest integer type that holds them (int16 for vocabularies under 32k: half the
    bytes on the wire), and the row lengths. Widened to long where the model reads them."""
    values, lengths = _flat(rows, torch.int32)
    if values.numel() and int(values.max()) < 2**15 and int(values.min()) >= 0:
        values = values.to(torch.int16)
    return values, lengths


@dataclass
class SampleShard:
    """One learner rank's share of a step's samples, as the driver sends it: ragged, unpadded, each prompt once.

    ``n`` samples continue ``u`` distinct prompts. Flat tensors are concatenations; ``*_lengths`` cut them.
    """

    prompt_ids: torch.Tensor  # [Σ prompt lengths] int16 or int32 (see _token_ids)
    prompt_lengths: torch.Tensor  # [u] int32
    prompt_index: torch.Tensor  # [n] int32: the prompt each sample continues
    response_ids: torch.Tensor  # [Σ response lengths] int16 or int32
    response_lengths: torch.Tensor  # [n] int32
    rollout_logprobs: torch.Tensor  # [Σ response lengths] float32: the engine's sampled-token logprobs
    loss_mask: torch.Tensor  # [n] bool: False = no loss on this sample (a padding row, DAPO's overlong filter)
    minibatch: torch.Tensor  # [n] int32: the optimizer step (mini-batch) the sample is trained in
    outcome: torch.Tensor  # [n] float: 1 correct, 0 not
    format_ok: torch.Tensor  # [n] bool
    # [Σ response lengths] bool: which response tokens get a loss (None: all). Supervised conversations mask the
    # user and tool turns between assistant turns.
    token_mask: Optional[torch.Tensor] = None

    @staticmethod
    def build(prompts: Sequence[Sequence[int]], prompt_index: Sequence[int], responses: Sequence[Sequence[int]],
              logprobs: Sequence[Sequence[float]], loss_mask: Sequence[bool], minibatch: Sequence[int],
              outcome: Sequence[float], format_ok: Sequence[bool],
              token_masks: Optional[Sequence[Optional[Sequence[bool]]]] = None) -> "SampleShard":
        """``token_masks``: per sample, which response tokens get a loss (None for a sample: all of them); multi-turn
        rollouts mask the tokens their environment inserted."""
        prompt_ids, prompt_lengths = _token_ids(prompts)
        response_ids, response_lengths = _token_ids(responses)
        rollout_logprobs, _ = _flat(logprobs, torch.float32)
        token_mask = None
        if token_masks is not None and any(m is not None for m in token_masks):
            token_mask = torch.tensor([bool(x) for m, r in zip(token_masks, responses)
                                       for x in (m if m is not None else [True] * len(r))], dtype=torch.bool)
        return SampleShard(prompt_ids, prompt_lengths, torch.tensor(prompt_index, dtype=torch.int32), response_ids,
                           response_lengths, rollout_logprobs, torch.tensor(loss_mask, dtype=torch.bool),
                           torch.tensor(minibatch, dtype=torch.int32), torch.tensor(outcome, dtype=torch.float32),
                           torch.tensor(format_ok, dtype=torch.bool), token_mask)

    @staticmethod
    def supervised(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                   token_masks: Sequence[Sequence[bool]], loss_mask: Sequence[bool]) -> "SampleShard":
        """Supervised examples (each its own prompt, one mini-batch) in the layout of rollout samples."""
        n = len(responses)
        return SampleShard.build(prompts, list(range(n)), responses, [[0.0] * len(r) for r in responses], loss_mask,
                                 [0] * n, [0.0] * n, [True] * n, token_masks=token_masks)

    @property
    def num_samples(self) -> int:
        return int(self.response_lengths.numel())

    def num_minibatches(self) -> int:
        return int(self.minibatch.max()) + 1 if self.num_samples else 0

    def to_train_batch(self, rows: Sequence[int], pad_id: int, packing: str = "none") -> TrainBatch:
        """The padded layout of ``rows`` (indices into this shard), with the loss mask applied; with ``packing``
        (``sequences`` | ``shared_prefix``) also their packed stream, which forward passes then use."""
        prompts = [p.tolist() for p in self.prompt_ids.split(self.prompt_lengths.tolist())]
        responses = list(self.response_ids.split(self.response_lengths.tolist()))
        logprobs = list(self.rollout_logprobs.split(self.response_lengths.tolist()))
        rows = list(rows)
        prompt_of = [int(self.prompt_index[i]) for i in rows]
        response_rows = [responses[i].tolist() for i in rows]
        batch = build_batch([prompts[k] for k in prompt_of], response_rows, [logprobs[i].tolist() for i in rows],
                            pad_id)
        if packing != "none":
            from rlpipe.learner.packing import pack

            batch.packed = pack(prompts, prompt_of, response_rows, share_prefix=packing == "shared_prefix")
        index = torch.tensor(rows, dtype=torch.long)
        batch.response_mask &= self.loss_mask[index].unsqueeze(1)
        if self.token_mask is not None:
            masks = self.token_mask.split(self.response_lengths.tolist())
            for k, i in enumerate(rows):
                batch.response_mask[k, : len(masks[i])] &= masks[i]
        batch.outcome = self.outcome[index]
        batch.format_ok = self.format_ok[index]
        return batch
