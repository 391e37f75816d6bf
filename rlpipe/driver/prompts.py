"""Prompt sources for training (each with an exact-resume cursor), the held-out set, and chat tokenization.

Sources: an endless stream of fresh synthetic problems; a fixed pool reshuffled every epoch; the same pool drawn by
an online pass-rate curriculum. A pass-rate table from the offline pre-pass (``python -m rlpipe.filter``) narrows
the pool to prompts whose pass rate lies in a window.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import torch

from rlpipe.config.schema import DataConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptItem:
    uid: str
    messages: tuple[dict[str, str], ...]
    gold: dict[str, Any] = field(hash=False)


class PromptSource(Protocol):
    def next_batch(self, n: int) -> list[PromptItem]: ...

    def observe(self, correct_by_uid: dict[str, list[bool]]) -> None:
        """Feedback from training rollouts (which samples of which prompt were correct)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class ArithmeticStream:
    """Fresh synthetic problems, never from the held-out set; the cursor makes a resumed run see the same ones."""

    def __init__(self, seed: int, heldout_questions: set[str]):
        from rlpipe.tasks.arithmetic import TrainStream

        self.stream = TrainStream(seed=seed, exclude=heldout_questions)

    def next_batch(self, n: int) -> list[PromptItem]:
        return [arithmetic_item(self.stream.next()) for _ in range(n)]

    def observe(self, correct_by_uid: dict[str, list[bool]]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)


class ShuffledPool:
    """A fixed pool, reshuffled every epoch; the cursor is (epoch, position), so resuming crosses epochs exactly."""

    def __init__(self, items: list[PromptItem], seed: int):
        if not items:
            raise ValueError("the prompt pool is empty (check data.pool_size / the pass-rate window)")
        self.items, self.seed = items, seed
        self.epoch, self.position = 0, 0

    def _order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.items), generator=g).tolist()

    def next_batch(self, n: int) -> list[PromptItem]:
        out, order = [], self._order(self.epoch)
        while len(out) < n:
            if self.position == len(self.items):
                self.epoch, self.position = self.epoch + 1, 0
                order = self._order(self.epoch)
            out.append(self.items[order[self.position]])
            self.position += 1
        return out

    def observe(self, correct_by_uid: dict[str, list[bool]]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]


class CurriculumPool:
    """Online pass-rate curriculum over a fixed pool.

    Each prompt keeps a running pass rate p (exponential average of its rollouts' correctness, prior 0.5 for unseen
    prompts); a batch is drawn without replacement with weights p(1 − p) + 0.01, i.e. preferring prompts that are
    sometimes but not always solved — the only ones whose groups carry a group-relative learning signal.
    """

    PRIOR, FLOOR = 0.5, 0.01

    def __init__(self, items: list[PromptItem], seed: int, ema: float):
        if not items:
            raise ValueError("the prompt pool is empty (check data.pool_size / the pass-rate window)")
        self.items, self.ema = items, ema
        self.index = {p.uid: i for i, p in enumerate(items)}
        self.pass_rate = torch.full((len(items),), self.PRIOR, dtype=torch.float64)
        self.seen = torch.zeros(len(items), dtype=torch.long)
        self.generator = torch.Generator().manual_seed(seed)

    def weights(self) -> torch.Tensor:
        return self.pass_rate * (1 - self.pass_rate) + self.FLOOR

    def next_batch(self, n: int) -> list[PromptItem]:
        out: list[PromptItem] = []
        while len(out) < n:  # more than the pool asked for: draw the pool again
            k = min(n - len(out), len(self.items))
            picks = torch.multinomial(self.weights(), k, replacement=False, generator=self.generator)
            out += [self.items[i] for i in picks.tolist()]
        return out

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
            row = json.loads(line)
            if "_meta" in row:
                meta = row["_meta"]
            elif "uid" in row and "pass_rate" in row:
                rates[row["uid"]] = float(row["pass_rate"])
            else:
                raise ValueError(f"{path}:{line_no}: a pass-rate row needs 'uid' and 'pass_rate'")
    return meta, rates


def training_pool(data: DataConfig, heldout_questions: set[str]) -> list[PromptItem]:
    """The first ``data.pool_size`` training problems (never held-out ones)."""
    stream = ArithmeticStream(data.seed, heldout_questions)
    return stream.next_batch(data.pool_size)


def build_prompts(data: DataConfig, prompt_length: Optional[Callable[[str], int]] = None,
                  quarantine: Optional[str] = None) -> tuple[PromptSource, list[PromptItem]]:
    """(training prompt source, held-out items) for ``data``.

    For data set files, ``prompt_length(text) -> tokens`` enables the prompt-length check at load time and
    ``quarantine`` is where skipped rows are written (``data.quarantine_file`` overrides it).
    """
    if data.task == "arithmetic" and data.pool_size == 0:
        from rlpipe.tasks.arithmetic import heldout_set

        heldout = heldout_set(n=data.heldout_size, seed=data.seed + 1)
        return ArithmeticStream(data.seed, {p.question for p in heldout}), [arithmetic_item(p) for p in heldout]
    pool, heldout_items = prompt_pool(data, prompt_length, quarantine)
    if data.pass_rate_table:
        meta, rates = read_pass_rates(data.pass_rate_table)
        missing = [p.uid for p in pool if p.uid not in rates]
        if missing:
            raise ValueError(f"{len(missing)} pool prompts are not in {data.pass_rate_table} (e.g. {missing[0]}): "
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
    from rlpipe.tasks.arithmetic import heldout_set

    heldout = heldout_set(n=data.heldout_size, seed=data.seed + 1)
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
            raise ValueError(f"data.heldout_size={data.heldout_size} leaves no training rows out of {len(items)}; "
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
        text = tokenizer.apply_chat_template(list(item.messages), add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > max_prompt_tokens:
            raise ValueError(f"prompt {item.uid} has {len(ids)} tokens > data.max_prompt_tokens={max_prompt_tokens}")
        return ids

    return tokenize, tokenizer
