"""Verifiers: turn one completion plus its task's gold fields into a reward and a structured verdict."""

from rlpipe.verify.types import REWARDABLE, Verdict, VerdictKind, Verifier

__all__ = ["REWARDABLE", "Verdict", "VerdictKind", "Verifier"]
