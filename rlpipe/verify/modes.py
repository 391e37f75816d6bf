"""The verifier's mode rules (rlpipe.tasks.modes): what a response must look like in reasoning and non-reasoning
mode. A response that breaks them is a format failure, whatever its answer."""

from __future__ import annotations

THINK_START, THINK_END = "<think>", "</think>"


def response_format(text: str, mode: str) -> tuple[bool, str]:
    """(format followed, reason if not) of a response in ``mode``, the text as decoded (think tags kept).

    reasoning: exactly one ``</think>``, at most one ``<think>`` (at the start: templates often put it in the
    generation prompt), and a non-empty answer after ``</think>``. non_reasoning: no think tag at all.
    """
    if mode == "non_reasoning":
        ok = THINK_START not in text and THINK_END not in text
        return ok, "" if ok else "think block in non-reasoning mode"
    if mode == "reasoning":
        if text.count(THINK_END) != 1:
            return False, "no </think>" if THINK_END not in text else "more than one </think>"
        thought, answer = text.split(THINK_END)
        if THINK_START in thought.lstrip()[len(THINK_START):] or THINK_START in answer:
            return False, "<think> inside the thought or the answer"
        if not answer.strip():
            return False, "nothing after </think>"
        return True, ""
    return True, ""
