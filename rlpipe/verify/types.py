"""The verdict every verifier returns, and the protocol a verifier implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol


class VerdictKind(str, Enum):
    CORRECT = "correct"
    WRONG = "wrong"
    PARSE_FAIL = "parse_fail"  # no answer could be extracted: the model's fault, scored
    TIMEOUT = "timeout"  # the check itself ran out of time: retried, never scored as wrong
    ERROR = "error"  # infrastructure failure (sandbox could not start, grader crashed): retried, never scored


# Only these verdicts become rewards. TIMEOUT and ERROR are infrastructure outcomes: the driver retries them and
# counts them, and a sample that still has one after its retries is dropped from the batch (counted), not scored 0.
REWARDABLE = frozenset({VerdictKind.CORRECT, VerdictKind.WRONG, VerdictKind.PARSE_FAIL})


@dataclass
class Verdict:
    kind: VerdictKind
    reward: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rewardable(self) -> bool:
        return self.kind in REWARDABLE

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.kind.value, "reward": self.reward, "details": self.details}


class Verifier(Protocol):
    """Scores one completion against the gold fields of its task (e.g. ``{"answer": "42"}``)."""

    def score(self, completion: str, gold: dict[str, Any]) -> Verdict: ...
