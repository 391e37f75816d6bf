"""Prompt sources for training (with an exact-resume cursor) and the fixed held-out set, plus chat tokenization."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from rlpipe.config.schema import DataConfig


@dataclass(frozen=True)
class PromptItem:
    uid: str
    messages: tuple[dict[str, str], ...]
    gold: dict[str, Any] = field(hash=False)


class PromptSource(Protocol):
    def next_batch(self, n: int) -> list[PromptItem]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class ArithmeticPrompts:
    """Fresh synthetic problems, never from the held-out set; the cursor makes a resumed run see the same ones."""

    def __init__(self, seed: int, heldout_questions: set[str]):
        from rlpipe.tasks.arithmetic import TrainStream

        self.stream = TrainStream(seed=seed, exclude=heldout_questions)

    def next_batch(self, n: int) -> list[PromptItem]:
        return [_arithmetic_item(self.stream.next()) for _ in range(n)]

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)


def _arithmetic_item(problem) -> PromptItem:
    from rlpipe.tasks.arithmetic import gold, to_messages

    return PromptItem(problem.uid, tuple(to_messages(problem)), gold(problem))


def build_prompts(data: DataConfig) -> tuple[PromptSource, list[PromptItem]]:
    """(training prompt source, held-out items) for ``data.task``."""
    if data.task == "arithmetic":
        from rlpipe.tasks.arithmetic import heldout_set

        heldout = heldout_set(n=data.heldout_size, seed=data.seed + 1)
        return ArithmeticPrompts(data.seed, {p.question for p in heldout}), [_arithmetic_item(p) for p in heldout]
    raise NotImplementedError(f"data.task={data.task!r} is not wired into training yet")


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
