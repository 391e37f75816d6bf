"""The plain class behind each verifier actor: builds a verifier by name and scores batches of completions."""

from __future__ import annotations

import logging
from typing import Any

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


class BatchVerifier:
    def __init__(self, name: str, options: dict[str, Any]):
        self.verifier = build_verifier(name, **options)

    def score_batch(self, items: list[tuple[str, dict[str, Any]]]) -> list[Verdict]:
        verdicts = []
        for completion, gold in items:
            try:
                verdicts.append(self.verifier.score(completion, gold))
            except Exception as e:  # a grader crash is an infrastructure error, never a wrong answer
                log.warning("verifier raised %s: %s", type(e).__name__, e)
                verdicts.append(Verdict(VerdictKind.ERROR, 0.0, {"exception": f"{type(e).__name__}: {e}"}))
        return verdicts
