"""Preference pairs: from files in TRL's preference format, or built from scored rollouts (online / iterative DPO).

File rows: ``prompt``, ``chosen``, ``rejected`` — plain strings, or conversational (the prompt a list of messages,
chosen and rejected lists of assistant messages). Each side is encoded like an SFT ``prompt`` + ``completion`` row
(rlpipe.tasks.conversations), so the completion's tokens, up to its end-of-sequence token, are what the loss reads.

Built pairs (``pair_from_group``): EXAONE 4.0's concision round — among one prompt's k scored responses, chosen = the
shortest correct one; rejected = a wrong one, or (rule ``longer`` / ``wrong_or_longer``) a correct one at least
``min_length_ratio`` times longer than the chosen. A group with no such pair gives none (the caller counts it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from rlpipe.tasks.conversations import ChatEncoder
from rlpipe.tasks.datasets import BadRow, LoadReport, load_encoded

REJECTION_RULES = ("wrong", "longer", "wrong_or_longer")  # prefer.rejected


@dataclass(frozen=True)
class PreferencePair:
    uid: str
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]

    @property
    def num_tokens(self) -> int:
        """Tokens of the pair as the learner packs it: the prompt once, both responses."""
        return len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)


def encode_pair(encoder: ChatEncoder, row: dict, uid: str, max_tokens: int) -> PreferencePair:
    for name in ("prompt", "chosen", "rejected"):
        if name not in row:
            raise BadRow("missing_field", f"no '{name}' field (a preference row has prompt, chosen and rejected)")
    chosen = encoder.encode({"prompt": row["prompt"], "completion": row["chosen"]}, uid)
    rejected = encoder.encode({"prompt": row["prompt"], "completion": row["rejected"]}, uid)
    if chosen.prompt_ids != rejected.prompt_ids:
        raise BadRow("prompt_mismatch", "chosen and rejected do not continue the same prompt tokens")
    room = max_tokens - len(chosen.prompt_ids)
    if room < 1:
        raise BadRow("too_long", f"the prompt alone has {len(chosen.prompt_ids)} tokens >= max_seq_tokens={max_tokens}")
    # Each side is cut to fit with the prompt (TRL's max_length), only its trained tokens kept.
    return PreferencePair(uid, chosen.prompt_ids, _trained(chosen)[:room], _trained(rejected)[:room])


def _trained(example) -> list[int]:
    return [t for t, m in zip(example.response_ids, example.response_mask) if m]


def load_pairs(path: str | Path, tokenizer, *, max_tokens: int, on_bad_row: str = "error",
               quarantine: Optional[str | Path] = None, split: Optional[str] = None,
               ) -> tuple[list[PreferencePair], LoadReport]:
    encoder = ChatEncoder(tokenizer)
    return load_encoded(path, lambda row, uid: encode_pair(encoder, row, uid, max_tokens), on_bad_row=on_bad_row,
                        quarantine=quarantine, split=split)


def pair_from_group(uid: str, prompt_ids: Sequence[int], responses: Sequence[Sequence[int]],
                    correct: Sequence[bool], rule: str, min_length_ratio: float,
                    ) -> tuple[Optional[PreferencePair], str]:
    """The pair one prompt's scored responses give under ``rule`` (see the module docstring), and why:
    ``wrong_rejected`` | ``longer_rejected`` | ``no_correct`` | ``no_rejected`` (no pair in the last two).

    Ties: the first shortest correct response is chosen; the rejected one is the first wrong response in sample
    order (``wrong``), else the longest correct one if it is long enough (``longer``)."""
    if rule not in REJECTION_RULES:
        raise ValueError(f"rule must be one of {REJECTION_RULES} (got {rule!r})")
    right = [i for i, ok in enumerate(correct) if ok]
    if not right:
        return None, "no_correct"
    best = min(right, key=lambda i: len(responses[i]))
    if rule in ("wrong", "wrong_or_longer"):
        wrong = next((i for i, ok in enumerate(correct) if not ok), None)
        if wrong is not None:
            return PreferencePair(uid, list(prompt_ids), list(responses[best]), list(responses[wrong])), "wrong_rejected"
    if rule in ("longer", "wrong_or_longer"):
        longest = max(right, key=lambda i: len(responses[i]))
        if len(responses[longest]) >= min_length_ratio * max(1, len(responses[best])) and longest != best:
            return (PreferencePair(uid, list(prompt_ids), list(responses[best]), list(responses[longest])),
                    "longer_rejected")
    return None, "no_rejected"
