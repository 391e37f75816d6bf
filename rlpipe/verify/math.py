"""Math answers: extract the final answer, then decide equivalence with math-verify (sympy-backed), under a deadline.

Verdicts: CORRECT / WRONG by math-verify; PARSE_FAIL when the completion has no final answer (no ``\\boxed{}``,
no ``####``, nothing the configured fallback finds, or nothing math-verify can parse); TIMEOUT when parsing or
comparing runs past ``timeout_s`` (retried by the driver, never scored); ERROR when the *gold* answer cannot be
parsed (a data problem: retried, then dropped and counted — data loading rejects such rows up front).

Optional format reward (``format="think"``): the completion must be ``<think>…</think> answer``; the answer is
looked for after ``</think>`` only, and ``format_reward`` is added when the format is followed. A completion that
never closes its thought has no answer (PARSE_FAIL).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from rlpipe.verify.deadline import DeadlineExceeded, ProcessRunner, call_with_deadline
from rlpipe.verify.math_answer import FALLBACKS, THINK_FORMATS, final_answer_span, gold_answer_span, split_think
from rlpipe.verify.types import Verdict, VerdictKind

# math-verify warns once that its own (signal-based) timeouts are off: ours replace them.
logging.getLogger("math_verify").setLevel(logging.ERROR)


def grade(gold_span: str, pred_span: str, float_rounding: int, numeric_precision: int,
          strict: bool) -> tuple[str, Optional[str], Optional[str]]:
    """(outcome, parsed gold, parsed prediction); outcome is correct | wrong | gold_unparsed | pred_unparsed.

    Module-level and argument-only, so it can run in a child process (see ``rlpipe.verify.deadline``).
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    targets = [LatexExtractionConfig(), ExprExtractionConfig()]
    gold = parse(gold_span, extraction_config=targets, parsing_timeout=None)
    if not gold:
        return "gold_unparsed", None, None
    pred = parse(pred_span, extraction_config=targets, parsing_timeout=None)
    if not pred:
        return "pred_unparsed", str(gold[0]), None
    ok = verify(gold, pred, float_rounding=float_rounding, numeric_precision=numeric_precision, strict=strict,
                timeout_seconds=None)
    return ("correct" if ok else "wrong"), str(gold[0]), str(pred[0])


class MathVerifier:
    def __init__(
        self,
        correct_reward: float = 1.0,
        wrong_reward: float = 0.0,
        parse_fail_reward: Optional[float] = None,
        timeout_s: float = 5.0,
        fallback: str = "none",
        format: str = "none",
        format_reward: float = 0.0,
        float_rounding: int = 6,
        numeric_precision: int = 15,
        strict: bool = True,
    ):
        if fallback not in FALLBACKS:
            raise ValueError(f"unknown math fallback {fallback!r}; valid: {', '.join(FALLBACKS)}")
        if format not in THINK_FORMATS:
            raise ValueError(f"unknown math format {format!r}; valid: {', '.join(THINK_FORMATS)}")
        self.correct_reward, self.wrong_reward = correct_reward, wrong_reward
        self.parse_fail_reward = wrong_reward if parse_fail_reward is None else parse_fail_reward
        self.timeout_s, self.fallback = timeout_s, fallback
        self.format, self.format_reward = format, format_reward
        self.grade_options = (float_rounding, numeric_precision, strict)
        self._runner = ProcessRunner()  # used only when called off the main thread

    def score(self, completion: str, gold: dict[str, Any]) -> Verdict:
        if "answer" not in gold:
            raise ValueError(f"math gold has no 'answer' field (fields: {sorted(gold)})")
        text, bonus, details = completion, 0.0, {}
        if self.format == "think":
            text, followed = split_think(completion)
            details["format_followed"] = followed
            bonus = self.format_reward if followed else 0.0
            if text is None:
                return Verdict(VerdictKind.PARSE_FAIL, self.parse_fail_reward, dict(details, reason="no </think>"))
        span = final_answer_span(text, self.fallback)
        if span is None:
            return Verdict(VerdictKind.PARSE_FAIL, self.parse_fail_reward + bonus, dict(details, reason="no answer"))
        gold_span = gold_answer_span(str(gold["answer"]))
        try:
            outcome, parsed_gold, parsed_pred = call_with_deadline(
                grade, (gold_span, span, *self.grade_options), self.timeout_s, self._runner)
        except DeadlineExceeded:
            return Verdict(VerdictKind.TIMEOUT, 0.0, dict(details, extracted=span[:200], timeout_s=self.timeout_s))
        details.update(extracted=span[:200], parsed=parsed_pred, gold=parsed_gold)
        if outcome == "gold_unparsed":
            return Verdict(VerdictKind.ERROR, 0.0, dict(details, reason=f"gold answer not parsable: {gold_span!r}"))
        if outcome == "pred_unparsed":
            return Verdict(VerdictKind.PARSE_FAIL, self.parse_fail_reward + bonus, details)
        if outcome == "correct":
            return Verdict(VerdictKind.CORRECT, self.correct_reward + bonus, details)
        return Verdict(VerdictKind.WRONG, self.wrong_reward + bonus, details)

    def close(self) -> None:
        self._runner.close()
