"""Preference pairs: from files in TRL's preference format, or built from scored rollouts (online / iterative DPO).

File rows: ``prompt``, ``chosen``, ``rejected`` — plain strings, or conversational (the prompt a list of messages,
chosen and rejected lists of assistant messages). Each side is encoded like an SFT ``prompt`` + ``completion`` row
(rlpipe.tasks.conversations), so the completion's tokens, up to its end-of-sequence token, are what the loss reads.
A row without ``prompt`` (TRL's implicit prompt: chosen and rejected are whole conversations or texts, as in
Anthropic's HH-RLHF) is split at the longest common prefix (``split_implicit_prompt``), as TRL's
``extract_prompt`` does.

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


def split_implicit_prompt(row: dict) -> dict:
    """``row`` with ``prompt`` taken out of ``chosen`` and ``rejected`` when it has none (TRL's implicit prompt).

    Conversational rows (lists of messages) split after their longest run of equal leading messages; what follows
    must start with an assistant turn on both sides. Plain strings split at their longest common prefix, moved back
    by one character when that character is a space, so " 4" and " 5" keep their leading space (TRL's rule: the
    completion is encoded on its own, and a prompt ending in a space tokenizes differently from the same text
    followed by the answer). A row with a ``prompt`` is returned as it is.
    """
    if "prompt" in row or "chosen" not in row or "rejected" not in row:
        return row
    chosen, rejected = row["chosen"], row["rejected"]
    if isinstance(chosen, list) and isinstance(rejected, list):
        cut = _common_prefix(chosen, rejected)
        rest = (chosen[cut:], rejected[cut:])
        if cut == 0 or not all(side and isinstance(side[0], dict) and side[0].get("role") == "assistant"
                               for side in rest):
            raise BadRow("no_common_prompt", "no 'prompt', and chosen and rejected do not share leading messages "
                                             "followed by an assistant turn on both sides")
    elif isinstance(chosen, str) and isinstance(rejected, str):
        cut = _common_prefix(chosen, rejected)
        if cut and chosen[cut - 1] == " ":
            cut -= 1
        rest = (chosen[cut:], rejected[cut:])
        if cut == 0 or not all(side.strip() for side in rest):
            raise BadRow("no_common_prompt", "no 'prompt', and chosen and rejected do not share a leading text "
                                             "followed by a different completion on each side")
    else:
        raise BadRow("missing_field", "no 'prompt' field, and chosen and rejected are not both strings or both "
                                      "lists of messages (a preference row has prompt, chosen and rejected)")
    return {**row, "prompt": chosen[:cut], "chosen": rest[0], "rejected": rest[1]}


def _common_prefix(a: Sequence, b: Sequence) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def encode_pair(encoder: ChatEncoder, row: dict, uid: str, max_tokens: int) -> PreferencePair:
    row = split_implicit_prompt(row)
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
