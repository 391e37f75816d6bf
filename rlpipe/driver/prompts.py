"""Prompt sources for training (each with an exact-resume cursor), the held-out set, and chat tokenization.

Sources: an endless stream of fresh synthetic problems; a fixed pool reshuffled every epoch; the same pool drawn by
an online pass-rate curriculum. A pass-rate table from the offline pre-pass (``python -m rlpipe.filter``) narrows
the pool to prompts whose pass rate lies in a window.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import AbstractSet, Any, Callable, Optional, Protocol, Sequence

import torch

from rlpipe.config.schema import DataConfig
from rlpipe.errors import UserError
from rlpipe.rollout.types import GenerationRequest
from rlpipe.tasks.modes import template_kwargs

log = logging.getLogger(__name__)


SAMPLERS = ("sequential", "curriculum")  # data.sampler


@dataclass(frozen=True)
class PromptItem:
    uid: str
    messages: tuple[dict[str, str], ...]
    gold: dict[str, Any] = field(hash=False)  # with "mode" when the prompt has one (the verifier's mode rules)

    @property
    def mode(self) -> str:
        """rlpipe.tasks.modes.MODES: the chat-template switch the prompt is rendered with."""
        return self.gold.get("mode", "none")


def with_mode(item: PromptItem, mode: str, tag_uid: bool = False) -> PromptItem:
    """``item`` asked in ``mode`` (none: unchanged); ``tag_uid`` appends the mode to the uid (one prompt asked in
    both modes, as held-out evaluation does in mixed mode)."""
    if mode == "none":
        return item
    return PromptItem(f"{item.uid}@{mode}" if tag_uid else item.uid, item.messages, {**item.gold, "mode": mode})


def training_mode(data_mode: str, uid: str) -> str:
    """A training prompt's mode: data.mode, or in mixed mode one of the two by the uid (a stable coin: the same
    prompt always gets the same mode, also after a resume)."""
    if data_mode != "mixed":
        return data_mode
    return "reasoning" if request_seed("mode", uid) % 2 == 0 else "non_reasoning"


def heldout_modes(items: Sequence[PromptItem], data_mode: str) -> list[PromptItem]:
    """Held-out items in data.mode; in mixed mode every problem twice, once per mode (uids tagged with the mode)."""
    if data_mode != "mixed":
        return [with_mode(p, data_mode) for p in items]
    return [with_mode(p, m, tag_uid=True) for m in ("reasoning", "non_reasoning") for p in items]


def with_stated_budget(item: PromptItem, budgets: Sequence[int]) -> PromptItem:
    """L1 (arXiv 2503.04697): the prompt states a token budget, one of ``budgets`` by the uid, appended to the last
    message ("Think for at most N tokens."); the gold keeps it (``budget_tokens``) for the budget reward."""
    if not budgets:
        return item
    n = budgets[request_seed("budget", item.uid) % len(budgets)]
    *head, last = item.messages
    last = {**last, "content": f"{last['content']} Think for at most {n} tokens."}
    return PromptItem(item.uid, (*head, last), {**item.gold, "budget_tokens": n})


def frame_training(item: PromptItem, data: DataConfig) -> PromptItem:
    """A training prompt with its mode and stated budget (data.mode, data.stated_budget_tokens)."""
    return with_stated_budget(with_mode(item, training_mode(data.mode, item.uid)), data.stated_budget_tokens)


def frame_heldout(items: Sequence[PromptItem], data: DataConfig) -> list[PromptItem]:
    """Held-out prompts with their modes (both, in mixed mode) and stated budgets."""
    return [with_stated_budget(p, data.stated_budget_tokens) for p in heldout_modes(items, data.mode)]


class PromptSource(Protocol):
    def next_batch(self, n: int, exclude: AbstractSet[str] = frozenset()) -> list[PromptItem]:
        """Up to ``n`` distinct prompts, none of whose uids is in ``exclude`` (the prompts a step already has).
        Fewer only when the source has no more distinct prompts to give (a fixed pool smaller than the step)."""
        ...

    def observe(self, correct_by_uid: dict[str, list[bool]]) -> None:
        """Feedback from training rollouts (which samples of which prompt were correct)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class ArithmeticStream:
    """Fresh synthetic problems, never from the held-out set; the cursor makes a resumed run see the same ones."""

    def __init__(self, data: DataConfig, heldout_questions: set[str]):
        from rlpipe.tasks.arithmetic import TrainStream

        self.stream = TrainStream(seed=data.seed, exclude=heldout_questions, operations=tuple(data.operations),
                                  make=problem_maker(data.task))
        self.data = data

    def next_batch(self, n: int, exclude: AbstractSet[str] = frozenset()) -> list[PromptItem]:
        # uids never repeat
        return [frame_training(arithmetic_item(self.stream.next()), self.data) for _ in range(n)]

    def observe(self, correct_by_uid: dict[str, list[bool]]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)


class ShuffledPool:
    """A fixed pool, reshuffled every epoch, each prompt once per epoch.

    A batch never holds a prompt twice, nor one in ``exclude``: such a prompt is skipped for now and stays first in
    line for a later batch. When an epoch runs out inside a batch, the next epoch starts with the prompts the old one
    did not deliver, followed by its own shuffle of the rest, so a step never trains one prompt twice and no prompt
    is lost. The cursor (epoch, the prompts left in this epoch, in order) makes a resumed run draw the same prompts.
    """

    def __init__(self, items: list[PromptItem], seed: int):
        if not items:
            raise UserError("the prompt pool is empty (check data.pool_size / the pass-rate window)")
        self.items, self.seed = items, seed
        self.epoch = 0
        self.queue: list[int] = self._order(0)  # indices still to deliver in this epoch

    def _order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.items), generator=g).tolist()

    def _new_epoch(self) -> None:
        self.epoch += 1
        left = set(self.queue)
        self.queue = self.queue + [i for i in self._order(self.epoch) if i not in left]

    def next_batch(self, n: int, exclude: AbstractSet[str] = frozenset()) -> list[PromptItem]:
        out: list[PromptItem] = []
        taken = set(exclude)
        fresh = False  # a new epoch was opened in this call (after that, nothing eligible means none is left)
        while len(out) < n:
            pos = next((k for k, i in enumerate(self.queue) if self.items[i].uid not in taken), None)
            if pos is None:
                if fresh:
                    break
                self._new_epoch()
                fresh = True
                continue
            item = self.items[self.queue.pop(pos)]
            taken.add(item.uid)
            out.append(item)
        return out

    def observe(self, correct_by_uid: dict[str, list[bool]]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "queue": list(self.queue)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.queue = state["epoch"], list(state["queue"])


class CurriculumPool:
    """Online pass-rate curriculum over a fixed pool.

    Each prompt keeps a running pass rate p (exponential average of its rollouts' correctness, prior 0.5 for unseen
    prompts); a batch is drawn without replacement with weights p(1 − p) + 0.01, i.e. preferring prompts that are
    sometimes but not always solved — the only ones whose groups carry a group-relative learning signal.
    """

    PRIOR, FLOOR = 0.5, 0.01

    def __init__(self, items: list[PromptItem], seed: int, ema: float):
        if not items:
            raise UserError("the prompt pool is empty (check data.pool_size / the pass-rate window)")
        self.items, self.ema = items, ema
        self.index = {p.uid: i for i, p in enumerate(items)}
        self.pass_rate = torch.full((len(items),), self.PRIOR, dtype=torch.float64)
        self.seen = torch.zeros(len(items), dtype=torch.long)
        self.generator = torch.Generator().manual_seed(seed)

    def weights(self) -> torch.Tensor:
        return self.pass_rate * (1 - self.pass_rate) + self.FLOOR

    def next_batch(self, n: int, exclude: AbstractSet[str] = frozenset()) -> list[PromptItem]:
        """Drawn without replacement; prompts in ``exclude`` have weight 0; at most the pool's eligible prompts."""
        weights = self.weights()
        for uid in exclude:
            if uid in self.index:
                weights[self.index[uid]] = 0.0
        k = min(n, int((weights > 0).sum()))
        if k == 0:
            return []
        picks = torch.multinomial(weights, k, replacement=False, generator=self.generator)
        return [self.items[i] for i in picks.tolist()]

    def observe(self, correct_by_uid: dict[str, list[bool]]) -> None:
        for uid, correct in correct_by_uid.items():
            if uid in self.index and correct:
                i = self.index[uid]
                rate = sum(correct) / len(correct)
                self.pass_rate[i] = rate if self.seen[i] == 0 else (1 - self.ema) * self.pass_rate[i] + self.ema * rate
                self.seen[i] += 1

    def state_dict(self) -> dict[str, Any]:
        return {"pass_rate": self.pass_rate.clone(), "seen": self.seen.clone(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pass_rate, self.seen = state["pass_rate"].clone(), state["seen"].clone()
        self.generator.set_state(state["generator"])


def request_seed(*parts: Any) -> int:
    """A stable 63-bit seed from its parts (run seed, purpose or step, round, prompt uid): sampling is reproducible
    on resume and re-queue and does not depend on batching or on which engine serves the request."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def make_requests(prompts: Sequence[PromptItem], tokenize: Callable[[PromptItem], list[int]], num_samples: int,
                  *seed_parts: Any) -> list[GenerationRequest]:
    """The one place generation requests are built: prompt uid as request id, chat-template token ids, and a seed
    ``request_seed(*seed_parts, uid)`` per prompt (training: (seed, step, round); evaluation: (seed, purpose))."""
    return [GenerationRequest(p.uid, tuple(tokenize(p)), num_samples, request_seed(*seed_parts, p.uid))
            for p in prompts]


def arithmetic_item(problem) -> PromptItem:
    from rlpipe.tasks.arithmetic import gold, to_messages

    return PromptItem(problem.uid, tuple(to_messages(problem)), gold(problem))


def read_pass_rates(path: str) -> tuple[dict[str, Any], dict[str, float]]:
    """(metadata, uid -> pass rate) from a table written by ``python -m rlpipe.filter``."""
    meta, rates = {}, {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise UserError(f"data.pass_rate_table={path}: line {line_no} is not JSON") from None
            if "_meta" in row:
                meta = row["_meta"]
            elif "uid" in row and "pass_rate" in row:
                rates[row["uid"]] = float(row["pass_rate"])
            else:
                raise UserError(f"data.pass_rate_table={path}: line {line_no}: a pass-rate row needs 'uid' and "
                                f"'pass_rate'")
    return meta, rates


def training_pool(data: DataConfig, heldout_questions: set[str]) -> list[PromptItem]:
    """The first ``data.pool_size`` training problems (never held-out ones)."""
    stream = ArithmeticStream(data, heldout_questions)
    return stream.next_batch(data.pool_size)


def problem_maker(task: str):
    """How a synthetic task draws one problem: rlpipe.tasks.arithmetic's, or tool_arithmetic's products."""
    if task == "tool_arithmetic":
        from rlpipe.tasks.tool_arithmetic import make_problem
    else:
        from rlpipe.tasks.arithmetic import make_problem
    return make_problem


def arithmetic_heldout(data: DataConfig):
    """The synthetic task's held-out problems (rlpipe.tasks.arithmetic.Problem)."""
    from rlpipe.tasks.arithmetic import heldout_set

    return heldout_set(n=data.heldout_size, seed=data.seed + 1, operations=tuple(data.operations),
                       make=problem_maker(data.task))


def build_prompts(data: DataConfig, prompt_length: Optional[Callable[[str], int]] = None,
                  quarantine: Optional[str] = None) -> tuple[PromptSource, list[PromptItem]]:
    """(training prompt source, held-out items) for ``data``.

    For data set files, ``prompt_length(text) -> tokens`` enables the prompt-length check at load time and
    ``quarantine`` is where skipped rows are written (``data.quarantine_file`` overrides it).
    """
    if data.task != "file" and data.pool_size == 0:
        heldout = arithmetic_heldout(data)
        return (ArithmeticStream(data, {p.question for p in heldout}),
                frame_heldout([arithmetic_item(p) for p in heldout], data))
    pool, heldout_items = prompt_pool(data, prompt_length, quarantine)
    if data.task == "file":  # the arithmetic pool comes framed from its stream
        pool = [frame_training(p, data) for p in pool]
    heldout_items = frame_heldout(heldout_items, data)
    if data.pass_rate_table:
        meta, rates = read_pass_rates(data.pass_rate_table)
        missing = [p.uid for p in pool if p.uid not in rates]
        if missing:
            raise UserError(f"{len(missing)} pool prompts are not in data.pass_rate_table={data.pass_rate_table} "
                            f"(e.g. {missing[0]}): "
                             f"it was written for another pool (its settings: {meta})")
        before = len(pool)
        pool = [p for p in pool if data.pass_rate_min <= rates[p.uid] <= data.pass_rate_max]
        log.info("pass-rate table %s: kept %d of %d prompts with pass rate in [%.3g, %.3g]", data.pass_rate_table,
                 len(pool), before, data.pass_rate_min, data.pass_rate_max)
    if data.sampler == "curriculum":
        return CurriculumPool(pool, data.seed, data.curriculum_ema), heldout_items
    return ShuffledPool(pool, data.seed), heldout_items


def prompt_pool(data: DataConfig, prompt_length: Optional[Callable[[str], int]] = None,
                quarantine: Optional[str] = None) -> tuple[list[PromptItem], list[PromptItem]]:
    """(fixed training pool, held-out items): ``data.pool_size`` synthetic problems, or the rows of a data file."""
    if data.task == "file":
        return file_prompts(data, prompt_length, quarantine)
    heldout = arithmetic_heldout(data)
    return training_pool(data, {p.question for p in heldout}), [arithmetic_item(p) for p in heldout]


def file_prompts(data: DataConfig, prompt_length: Optional[Callable[[str], int]],
                 quarantine: Optional[str]) -> tuple[list[PromptItem], list[PromptItem]]:
    """(training pool, held-out items) from ``data.file``: the held-out items come from ``data.heldout_file``, or
    are ``data.heldout_size`` rows split off the training file (a seeded shuffle; disjoint from the pool)."""
    from rlpipe.tasks.datasets import load_examples

    def load(path: str) -> list[PromptItem]:
        examples, _ = load_examples(path, data.format, fields=dict(data.fields), on_bad_row=data.on_bad_row,
                                    quarantine=data.quarantine_file or quarantine, split=data.split,
                                    prompt_length=prompt_length, max_prompt_tokens=data.max_prompt_tokens)
        return [PromptItem(e.uid, ({"role": "user", "content": e.prompt},), e.gold) for e in examples]

    items = load(data.file)
    if data.heldout_file:
        heldout = load(data.heldout_file)[: data.heldout_size or None]
        pool = items
    else:
        order = torch.randperm(len(items), generator=torch.Generator().manual_seed(data.seed)).tolist()
        if data.heldout_size >= len(items):
            raise UserError(f"data.heldout_size={data.heldout_size} leaves no training rows out of {len(items)}; "
                             f"lower it or give data.heldout_file")
        heldout = [items[i] for i in order[: data.heldout_size]]
        pool = [items[i] for i in order[data.heldout_size:]]
    if data.pool_size:
        pool = pool[: data.pool_size]
    log.info("data: %d training prompts, %d held out", len(pool), len(heldout))
    return pool, heldout


def chat_length(tokenizer) -> Callable[[str], int]:
    """Prompt text -> its token count after the chat template (what the rollout engine will see)."""

    def length(text: str) -> int:
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                 tokenize=False)
        return len(tokenizer(rendered, add_special_tokens=False)["input_ids"])

    return length


def chat_tokenizer(model_path: str, max_prompt_tokens: int) -> tuple[Callable[[PromptItem], list[int]], Any]:
    """A function PromptItem -> prompt token ids (chat template + generation prompt), and the tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def tokenize(item: PromptItem) -> list[int]:
        text = tokenizer.apply_chat_template(list(item.messages), add_generation_prompt=True, tokenize=False,
                                             **template_kwargs(item.mode))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > max_prompt_tokens:
            raise UserError(f"prompt {item.uid} has {len(ids)} tokens > data.max_prompt_tokens={max_prompt_tokens}")
        return ids

    return tokenize, tokenizer
