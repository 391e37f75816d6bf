"""Where the final answer of a math completion (or a gold field) is, and the light normalisation math-verify lacks.

math-verify does the extraction where it is good at it (boxed answers, LaTeX environments) and decides
equivalence; this module only decides *what text* it sees: the part after ``</think>``, the number after GSM8K's
``####`` (made canonical: ``1,234`` -> ``1234``, ``025`` -> ``25``), or a fallback.
"""

from __future__ import annotations

import re
from typing import Optional

from rlpipe.verify.extract import gsm8k_answer, last_boxed

# Fallbacks when a completion has neither \boxed{} nor "####".
FALLBACKS = ("none", "last_number", "math_verify")
THINK_FORMATS = ("none", "think")

_LAST_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+")
_GROUPED_NUMBER = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_PADDED_INTEGER = re.compile(r"([-+]?)0+(\d+)")
# A plain number: digits with optional thousands grouping and decimals. "1,22" is not one: in math data sets (MATH
# writes "-2,1" for two solutions) a comma outside a thousands grouping separates a list.
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
_LATEX_DELIMITER = re.compile(r"(?<!\\)\$|\\\[|\\\(")
_THINK = re.compile(r"\s*(?:<think>)?(?P<thought>.*?)</think>(?P<answer>.*)", re.DOTALL)


def split_think(text: str) -> tuple[Optional[str], bool]:
    """(answer part, format followed) of a ``<think>...</think> answer`` completion.

    The opening tag is optional because many reasoning models' chat templates put ``<think>`` in the generation
    prompt, so the completion starts inside the thought. The format is followed when there is exactly one closing
    tag, at most one opening tag (at the start), and a non-empty answer after it. Without a closing tag there is no
    answer part (None): the model never finished thinking.
    """
    match = _THINK.fullmatch(text)
    if match is None:
        return None, False
    answer = match["answer"]
    followed = (text.count("</think>") == 1 and text.count("<think>") <= 1 and "<think>" not in match["thought"]
                and bool(answer.strip()))
    return answer, followed


def last_number(text: str) -> Optional[str]:
    """The last number in ``text`` (``1,234.5``, ``-3``, ``.5``), trailing separators dropped; None if none."""
    found = _LAST_NUMBER.findall(text)
    return found[-1].rstrip(",") if found else None


def normalise_number(span: str) -> str:
    """``1,234`` -> ``1234`` and ``025`` -> ``25``; anything that is not such a plain number is returned as is."""
    s = span.strip()
    if _GROUPED_NUMBER.fullmatch(s):
        s = s.replace(",", "")
    padded = _PADDED_INTEGER.fullmatch(s)
    if padded:
        s = padded[1] + padded[2]
    return s


def final_answer_span(text: str, fallback: str = "none") -> Optional[str]:
    """The text math-verify should parse for ``text``'s final answer, or None when there is none.

    In order: a text with a ``\\boxed{...}`` is handed over whole (math-verify prefers the boxed answers and merges
    several final boxes into one set, e.g. ``\\boxed{1}, \\boxed{2}``); the text after GSM8K's last ``####``
    (boxed); then ``fallback``: ``last_number`` (the last number in the text), ``math_verify`` (the whole text:
    math-verify's own extraction looks for LaTeX environments and "final answer is ..."), or ``none``.
    """
    if last_boxed(text) is not None:
        return text
    marked = gsm8k_answer(text)
    if marked is not None:
        return f"\\boxed{{{normalise_number(marked)}}}"
    if fallback == "last_number":
        number = last_number(text)
        return None if number is None else f"\\boxed{{{normalise_number(number)}}}"
    if fallback == "math_verify":
        return text if text.strip() else None
    if fallback != "none":
        raise ValueError(f"unknown fallback {fallback!r}; valid: {', '.join(FALLBACKS)}")
    return None


def gold_answer_span(answer: str) -> str:
    """The span math-verify parses for a gold answer field.

    A gold field may be a worked solution ending in ``#### 18`` or ``\\boxed{...}``, already LaTeX-delimited
    (``$9$``), a plain number (``1,234``, ``025``), or bare LaTeX (``\\frac{1}{2}``, ``\\$18.90``, ``-2,1``), which is
    boxed so it is read as LaTeX.
    """
    span = final_answer_span(answer, fallback="none")
    if span is not None:
        return span
    if _LATEX_DELIMITER.search(answer) or _PLAIN_NUMBER.fullmatch(answer.strip()):
        return answer
    return f"\\boxed{{{answer}}}"
