"""Answer extraction shared by the verifiers: the last ``\\boxed{...}`` (nested braces allowed), GSM8K's ``####``."""

from __future__ import annotations

import re

_BOXED_OPENERS = ("\\boxed{", "\\fbox{")
_GSM8K_RE = re.compile(r"####\s*([^\n]+)")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``, braces balanced; None if absent/unclosed."""
    start = max(text.rfind(opener) for opener in _BOXED_OPENERS)
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


def gsm8k_answer(text: str) -> str | None:
    """The text after the last ``####`` marker (GSM8K's gold format), commas removed."""
    found = _GSM8K_RE.findall(text)
    if not found:
        return None
    return found[-1].strip().replace(",", "")
