"""Exact integer answers in the last ``\\boxed{}`` (the synthetic arithmetic task)."""

from __future__ import annotations

import re
from typing import Any

from rlpipe.verify.extract import last_boxed
from rlpipe.verify.types import Verdict, VerdictKind

_INT = re.compile(r"[+-]?\d+")


class ArithmeticVerifier:
    def __init__(self, correct_reward: float = 1.0, wrong_reward: float = 0.0, parse_fail_reward: float = 0.0):
        self.correct_reward = correct_reward
        self.wrong_reward = wrong_reward
        self.parse_fail_reward = parse_fail_reward

    def score(self, completion: str, gold: dict[str, Any]) -> Verdict:
        expected = int(gold["answer"])
        boxed = last_boxed(completion)
        if boxed is None or not _INT.fullmatch(boxed.strip()):
            return Verdict(VerdictKind.PARSE_FAIL, self.parse_fail_reward, {"extracted": boxed})
        got = int(boxed.strip())
        if got == expected:
            return Verdict(VerdictKind.CORRECT, self.correct_reward, {"extracted": got})
        return Verdict(VerdictKind.WRONG, self.wrong_reward, {"extracted": got, "expected": expected})
