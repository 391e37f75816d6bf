"""Reasoning and non-reasoning modes of one model (EXAONE 4.0, Qwen3): what a prompt carries, how rows are mixed.

A prompt's mode reaches the model through the chat template's ``enable_thinking`` switch (the convention of Qwen3
and EXAONE 4.0 templates): in reasoning mode the model thinks in a ``<think>…</think>`` block and answers after it;
in non-reasoning mode it answers at once, and a think block is a format failure. ``none`` is a task without modes
(no switch is passed: the template's own default, today's default job).

Mixed data follows EXAONE 4.0's recipe of a ratio *by tokens* (1.5 reasoning tokens to 1 non-reasoning token in its
SFT data), not by rows: a reasoning row is several times longer than a non-reasoning one, so a row ratio would say
little about what the model mostly learns from.
"""

from __future__ import annotations

from typing import Any

MODES = ("none", "reasoning", "non_reasoning")  # a prompt's / row's mode
DATA_MODES = ("none", "reasoning", "non_reasoning", "mixed")  # data.mode


def template_kwargs(mode: str) -> dict[str, Any]:
    """The chat-template arguments that select ``mode`` (none: no argument, the template's default)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    return {} if mode == "none" else {"enable_thinking": mode == "reasoning"}


class TokenRatioMixer:
    """Picks each next row's mode so that reasoning tokens : non-reasoning tokens stays at ``ratio`` (≥ 0).

    Greedy and deterministic: the next row is a reasoning row while the reasoning tokens so far fall short of
    ``ratio`` × the non-reasoning tokens so far, so the running ratio never drifts by more than one row's tokens.
    The first row is non-reasoning (0 < ratio × 0 is false). The state is two counts (``state_dict``).
    """

    def __init__(self, ratio: float):
        if ratio < 0:
            raise ValueError(f"reasoning_ratio must be >= 0 (got {ratio})")
        self.ratio = ratio
        self.tokens = {"reasoning": 0, "non_reasoning": 0}

    def next_mode(self) -> str:
        return "reasoning" if self.tokens["reasoning"] < self.ratio * self.tokens["non_reasoning"] else "non_reasoning"

    def record(self, mode: str, tokens: int) -> None:
        self.tokens[mode] += tokens

    @property
    def realised_ratio(self) -> float:
        return self.tokens["reasoning"] / max(1, self.tokens["non_reasoning"])

    def state_dict(self) -> dict[str, Any]:
        return dict(self.tokens)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tokens = {"reasoning": int(state["reasoning"]), "non_reasoning": int(state["non_reasoning"])}
