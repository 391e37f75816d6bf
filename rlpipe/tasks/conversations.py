"""Supervised rows from data files, in the formats TRL and the Hugging Face hub use, as token ids with a loss mask.

Formats, told apart by a row's fields (TRL's names):

- ``messages``: a conversation, ``[{"role": ..., "content": ...}, ...]``; every assistant turn gets a loss.
- ``prompt`` + ``completion``: plain strings (the completion is followed by the end-of-sequence token) or
  conversational (lists of messages, the completion's assistant turns get a loss).
- ``text``: plain text; every token after the first gets a loss (the first has nothing to predict it).

A row may name its ``mode`` (reasoning | non_reasoning, rlpipe.tasks.modes): the chat template then renders it with
that ``enable_thinking`` switch, as the rollout engines will see prompts of that mode.

A row becomes a ``SupervisedExample``: ``prompt_ids`` (never a loss) and ``response_ids`` with a per-token
``response_mask`` (False on the user / tool turns between assistant turns). The learner lays it out like a rollout
sample, so SFT runs on the same micro-batches, packing and token budgets as RL.

An assistant turn's tokens are found by rendering the chat template incrementally: turn i spans the tokens between
``render(messages[:i], add_generation_prompt=True)`` and ``render(messages[:i+1])``. That needs a template whose
render of a conversation's beginning is a prefix of the whole conversation's; a template that rewrites earlier turns
(some drop past reasoning) fails with a ``BadRow`` naming the turn, never a silently wrong mask. The span ends at the
end-of-sequence token if the turn holds one: the tokens after it (a template's newline) are never generated.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from rlpipe.tasks.datasets import BadRow, LoadReport, load_encoded
from rlpipe.tasks.modes import MODES, template_kwargs

log = logging.getLogger(__name__)
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class SupervisedExample:
    uid: str
    prompt_ids: list[int]
    response_ids: list[int]
    response_mask: list[bool]  # [len(response_ids)]: True = the token gets a loss

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)

    @property
    def loss_tokens(self) -> int:
        return sum(self.response_mask)


def row_format(row: dict[str, Any]) -> str:
    """``messages`` | ``prompt_completion`` | ``text``, from the row's fields; a BadRow if none fits."""
    if "messages" in row:
        return "messages"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    if "text" in row:
        return "text"
    raise BadRow("unknown_format", f"no 'messages', 'prompt'+'completion' or 'text' field (fields: "
                                   f"{', '.join(sorted(row))[:200]})")


def _messages(value: Any, name: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise BadRow("bad_messages", f"'{name}' must be a non-empty list of messages")
    for k, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise BadRow("bad_messages", f"'{name}'[{k}] must be {{role: {'|'.join(ROLES)}, content: str}}")
    return [{"role": m["role"], "content": m["content"]} for m in value]


class ChatEncoder:
    """Token ids of rows through one tokenizer and its chat template (the one the rollout engines use)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_token_id
        # A fast tokenizer's Rust core, called directly: the same ids as ``tokenizer(text)["input_ids"]`` (tested)
        # without transformers' per-call bookkeeping, which was two thirds of reading the default job's 48,000
        # teacher traces (two renders per row).
        self._backend = tokenizer.backend_tokenizer if getattr(tokenizer, "is_fast", False) else None

    def ids(self, text: str, special: bool = False) -> list[int]:
        if self._backend is not None:
            return self._backend.encode(text, add_special_tokens=special).ids
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def render(self, messages: list[dict[str, str]], generation_prompt: bool, mode: str = "none") -> list[int]:
        return self.ids(self.tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt,
                                                           tokenize=False, **template_kwargs(mode)))

    def encode(self, row: dict[str, Any], uid: str) -> SupervisedExample:
        fmt = row_format(row)
        mode = row.get("mode", "none")
        if mode not in MODES:
            raise BadRow("bad_mode", f"'mode' must be one of {', '.join(MODES)} (got {mode!r})")
        if fmt == "messages":
            return self._conversation(uid, _messages(row["messages"], "messages"), trained_from=0, mode=mode)
        if fmt == "text":
            if not isinstance(row["text"], str) or not row["text"].strip():
                raise BadRow("empty_text", "'text' is empty or not a string")
            ids = self.ids(row["text"], special=True) + [self.eos_id]
            return SupervisedExample(uid, ids[:1], ids[1:], [True] * (len(ids) - 1))
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, str) and isinstance(completion, str):
            if not completion.strip():
                raise BadRow("empty_completion", "'completion' is empty")
            response = self.ids(completion) + [self.eos_id]
            return SupervisedExample(uid, self.ids(prompt, special=True), response, [True] * len(response))
        if isinstance(prompt, list) and isinstance(completion, list):
            head = _messages(prompt, "prompt")
            return self._conversation(uid, head + _messages(completion, "completion"), trained_from=len(head),
                                      mode=mode)
        raise BadRow("bad_prompt_completion", "'prompt' and 'completion' must both be strings or both be lists of "
                                              "messages")

    def _conversation(self, uid: str, messages: list[dict[str, str]], trained_from: int,
                      mode: str = "none") -> SupervisedExample:
        """Assistant turns at index >= ``trained_from`` get a loss (see the module docstring); the chat template
        renders the conversation in ``mode`` (rlpipe.tasks.modes)."""
        full = self.render(messages, generation_prompt=False, mode=mode)
        mask = [False] * len(full)
        first, end = None, 0
        for i, m in enumerate(messages):
            if m["role"] != "assistant" or i < trained_from:
                continue
            before = self.render(messages[:i], generation_prompt=True, mode=mode) if i else []
            upto = full if i == len(messages) - 1 else self.render(messages[: i + 1], generation_prompt=False,
                                                                   mode=mode)
            if full[: len(upto)] != upto or upto[: len(before)] != before:
                raise BadRow("template_not_prefix", f"the chat template renders turn {i} differently inside the "
                                                    f"whole conversation: its assistant tokens cannot be found")
            start, stop = len(before), len(upto)
            if self.eos_id in upto[start:]:
                stop = start + upto[start:].index(self.eos_id) + 1
            if stop <= start:
                raise BadRow("empty_assistant_turn", f"assistant turn {i} has no tokens")
            mask[start:stop] = [True] * (stop - start)
            first = start if first is None else first
            end = stop
        if first is None:
            raise BadRow("no_assistant_turn", "no assistant turn to train on")
        return SupervisedExample(uid, full[:first], full[first:end], mask[first:end])


def load_supervised(path: str | Path, tokenizer, *, max_tokens: int, on_bad_row: str = "error",
                    quarantine: Optional[str | Path] = None, split: Optional[str] = None,
                    ) -> tuple[list[SupervisedExample], LoadReport]:
    """Every usable row of ``path`` (any mix of the three formats) as a SupervisedExample.

    A row longer than ``max_tokens`` keeps its first ``max_tokens`` tokens (TRL's ``max_length`` truncation), counted
    and logged; a row whose prompt alone fills ``max_tokens`` has nothing left to train and is a bad row
    (``too_long``).
    """
    encoder = ChatEncoder(tokenizer)
    truncated = 0

    def encode(row: dict[str, Any], uid: str) -> SupervisedExample:
        nonlocal truncated
        example = encoder.encode(row, uid)
        if len(example.prompt_ids) >= max_tokens:
            raise BadRow("too_long", f"the prompt alone has {len(example.prompt_ids)} tokens >= "
                                     f"max_seq_tokens={max_tokens}")
        if example.num_tokens > max_tokens:
            keep = max_tokens - len(example.prompt_ids)
            example = SupervisedExample(uid, example.prompt_ids, example.response_ids[:keep],
                                        example.response_mask[:keep])
            truncated += 1
        if not example.loss_tokens:
            raise BadRow("too_long", f"no trained token is left within max_seq_tokens={max_tokens}")
        return example

    out = load_encoded(path, encode, on_bad_row=on_bad_row, quarantine=quarantine, split=split)
    if truncated:
        log.warning("data %s: %d rows truncated to max_seq_tokens=%d", path, truncated, max_tokens)
    return out


def write_rows(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """A jsonl file of rows (teacher traces, built preference pairs), written whole or not at all."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(p)
