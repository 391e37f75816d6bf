"""Budget forcing (s1, arXiv 2501.19393; EXAONE 4.0's reasoning budgets): when a response's thinking span reaches
``thinking_budget_tokens``, the engine itself closes it (``</think>``) and the model answers within the answer
budget. A forced stop inside generation, not a cut after the fact: the answer is conditioned on the closed thought.

Counting: the thinking span is the tokens after ``<think>`` (in the prompt, where reasoning-mode templates open it,
or generated) and before ``</think>``; a prompt's share of the thought counts, as in vLLM's own forcing. With a
budget of B thinking tokens and an answer budget of A tokens (the closing tag included), a response has at most
B + A tokens. Only the first thought is budgeted here; vLLM budgets each thought a response opens (a model that
opens a second one is already off its format).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch


@dataclass(frozen=True)
class ThinkTokens:
    start_id: int
    end_id: int

    @classmethod
    def of(cls, tokenizer) -> Optional["ThinkTokens"]:
        """The tokenizer's ``<think>`` / ``</think>`` ids, or None when either is not a single token."""
        ids = []
        for tag in ("<think>", "</think>"):
            found = tokenizer.convert_tokens_to_ids(tag)
            if found is None or found == tokenizer.unk_token_id or tokenizer.convert_ids_to_tokens(found) != tag:
                return None
            ids.append(found)
        return cls(*ids)


def prompt_thought(prompt_ids: Sequence[int], think: ThinkTokens) -> Optional[int]:
    """How many tokens of an open thought the prompt already holds (the tokens after its last ``<think>``, e.g. the
    newline of ``<think>\\n``), or None when the prompt does not open one. They count against the budget, as in
    vLLM."""
    for back, token in enumerate(reversed(prompt_ids)):
        if token == think.end_id:
            return None
        if token == think.start_id:
            return back
    return None


def _thought(response_ids: Sequence[int], think: ThinkTokens, carried: Optional[int]) -> Optional[tuple[int, int]]:
    """(where the response's thinking starts, tokens already thought before it), or None: no thought opened."""
    if carried is not None:
        return 0, carried
    if think.start_id in response_ids:
        return list(response_ids).index(think.start_id) + 1, 0
    return None


def thinking_tokens(response_ids: Sequence[int], think: ThinkTokens, carried: Optional[int]) -> int:
    """Tokens of the (first) thought, the prompt's share (``carried``, from ``prompt_thought``) included."""
    opened = _thought(response_ids, think, carried)
    if opened is None:
        return 0
    start, before = opened
    rest = list(response_ids[start:])
    return before + (rest.index(think.end_id) if think.end_id in rest else len(rest))


def must_close(response_ids: Sequence[int], think: ThinkTokens, carried: Optional[int], budget: int) -> bool:
    """The next token must be ``</think>``: the thought is open and already holds ``budget`` tokens."""
    opened = _thought(response_ids, think, carried)
    if opened is None:
        return False
    start, before = opened
    return think.end_id not in response_ids[start:] and before + len(response_ids) - start >= budget


def forced_position(response_ids: Sequence[int], think: ThinkTokens, carried: Optional[int],
                    budget: int) -> Optional[int]:
    """The position of the ``</think>`` the engine forced (the one right after a full thought), or None."""
    opened = _thought(response_ids, think, carried)
    if opened is None:
        return None
    start, before = opened
    at = start + max(0, budget - before)
    ids = list(response_ids)
    return at if at < len(ids) and ids[at] == think.end_id and think.end_id not in ids[start:at] else None


def zero_forced_logprob(response_ids: Sequence[int], logprobs, think: ThinkTokens, carried: Optional[int],
                        budget: int) -> None:
    """A forced ``</think>`` was drawn from a distribution with all its mass on it: its sampled-token logprob is 0
    (what vLLM reports for it, too). Changes ``logprobs`` in place."""
    at = forced_position(response_ids, think, carried, budget)
    if at is not None:
        logprobs[at] = 0.0


class ThinkingBudgetProcessor:
    """A transformers ``LogitsProcessor``: rows whose thought is full get every logit but ``</think>``'s set to −inf.

    ``prompt_len``: the (shared, unpadded) prompt length of the batch; ``carried``: ``prompt_thought`` of the prompt.
    """

    def __init__(self, think: ThinkTokens, budget: int, prompt_len: int, carried: Optional[int]):
        self.think, self.budget, self.prompt_len, self.carried = think, budget, prompt_len, carried

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        rows = [r for r in range(input_ids.shape[0])
                if must_close(input_ids[r, self.prompt_len:].tolist(), self.think, self.carried, self.budget)]
        if not rows:
            return scores
        scores = scores.clone()  # generate() may hand the raw logits it returns (output_logits) to processors
        scores[rows] = float("-inf")
        scores[rows, self.think.end_id] = 0.0
        return scores
