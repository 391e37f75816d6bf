"""The plain class behind each verifier actor: builds a verifier by name and scores batches of completions."""

from __future__ import annotations

import logging
from typing import Any

from rlpipe.verify.modes import THINK_END, response_format
from rlpipe.verify.types import Verdict, VerdictKind

log = logging.getLogger(__name__)


# Imported lazily: the code verifier needs the sandbox, the math verifier math-verify; neither is loaded unless used.
BUILTIN_VERIFIERS = {
    "arithmetic": "rlpipe.verify.arithmetic:ArithmeticVerifier",
    "math": "rlpipe.verify.math:MathVerifier",
    "code": "rlpipe.verify.code:CodeVerifier",
}


def build_verifier(name: str, **options: Any):
    """``verifier.name`` -> a verifier object (``score(completion, gold) -> Verdict``).

    A name of the form ``package.module:Class`` builds a user's own verifier class.
    """
    from rlpipe.registry import import_object

    if ":" in name:
        return import_object(name)(**options)
    if name not in BUILTIN_VERIFIERS:
        raise KeyError(f"unknown verifier {name!r}; valid names: {', '.join(sorted(BUILTIN_VERIFIERS))} "
                       f"or 'package.module:Class'")
    return import_object(BUILTIN_VERIFIERS[name])(**options)


def score_in_mode(verifier, completion: str, gold: dict[str, Any]) -> Verdict:
    """The mode rules (rlpipe.verify.modes), for every verifier: a prompt with ``gold["mode"]`` must be answered in
    that mode's format — a response that breaks it is a format failure (PARSE_FAIL, the verifier's parse-fail
    reward), and in reasoning mode only the answer after ``</think>`` is graded. Without a mode: the verifier alone."""
    mode = gold.get("mode", "none")
    if mode == "none":
        return verifier.score(completion, gold)
    followed, reason = response_format(completion, mode)
    if not followed:
        return Verdict(VerdictKind.PARSE_FAIL, float(getattr(verifier, "parse_fail_reward", 0.0)),
                       {"mode": mode, "format_followed": False, "reason": reason})
    answer = completion.split(THINK_END, 1)[1] if mode == "reasoning" else completion
    verdict = verifier.score(answer, {k: v for k, v in gold.items() if k != "mode"})
    # Format compliance means the mode's layout *and* an answer the verifier can read where that layout puts it.
    verdict.details.update(mode=mode, format_followed=verdict.kind != VerdictKind.PARSE_FAIL)
    return verdict


class BatchVerifier:
    def __init__(self, name: str, options: dict[str, Any]):
        self.verifier = build_verifier(name, **options)

    def score_batch(self, items: list[tuple[str, dict[str, Any]]]) -> list[Verdict]:
        verdicts = []
        for completion, gold in items:
            try:
                verdicts.append(score_in_mode(self.verifier, completion, gold))
            except Exception as e:  # a grader crash is an infrastructure error, never a wrong answer
                log.warning("verifier raised %s: %s", type(e).__name__, e)
                verdicts.append(Verdict(VerdictKind.ERROR, 0.0, {"exception": f"{type(e).__name__}: {e}"}))
        return verdicts
