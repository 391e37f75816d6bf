"""Scripted stand-ins for a rollout engine and a verifier, for tests whose point is the driver's plumbing
(collection, refill, retries, re-queue, the ledger), not generation or grading. Their behaviour is a pure function of
the prompt and sample index, so a test can say exactly which groups are informative and which samples fail."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from rlpipe.rollout.types import Completion, GenerationRequest, SamplingSettings
from rlpipe.verify.types import Verdict, VerdictKind

# Response token ids valid in the micro/tiny tokenizers (any id below their 512-token vocabulary would do).
TOKENS = (20, 21, 22, 23)


class EngineDied(RuntimeError):
    """Stands for vLLM's EngineDeadError: declared fatal, so the worker is rebuilt."""


class ScriptedEngine:
    """Answers sample k of a prompt with the text "<prompt question>|k"; ``fail_first_generate`` makes the first
    generate call of each new object raise a fatal error (once per process: the rebuilt object succeeds)."""

    fatal_raised = False

    def __init__(self, fail_first_generate: bool = False, **_engine_options):
        self.fail_first_generate = fail_first_generate
        self.calls: Counter = Counter()

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingSettings) -> list[Completion]:
        self.calls["generate"] += 1
        if self.fail_first_generate and not ScriptedEngine.fatal_raised:
            ScriptedEngine.fatal_raised = True
            raise EngineDied("engine core died")
        out = []
        for req in requests:
            for k in range(req.num_samples):
                ids = [TOKENS[(k + j) % len(TOKENS)] for j in range(1 + k % 3)]
                out.append(Completion(req.request_id, k, ids, [-1.0] * len(ids), "stop", f"{req.request_id}|{k}"))
        return out

    def load_weights(self, named_tensors) -> None:
        self.calls["load_weights"] += 1

    def sleep(self) -> None:
        pass

    def wake_up(self) -> None:
        pass

    @staticmethod
    def is_fatal(error: BaseException) -> bool:
        return isinstance(error, EngineDied)


class ScriptedVerifier:
    """Reward from the prompt's gold fields: ``{"pattern": "mixed"}`` -> samples alternate correct / wrong (an
    informative group); ``"same"`` -> all wrong (zero variance); ``"flaky"`` -> sample 0 times out on its first try
    only; ``"broken"`` -> sample 0 errors every time (dropped after the retries)."""

    seen: Counter = Counter()

    def __init__(self, **_options):
        pass

    def score(self, completion: str, gold: dict) -> Verdict:
        uid, k = completion.rsplit("|", 1)
        k = int(k)
        ScriptedVerifier.seen[completion] += 1
        pattern = gold["pattern"]
        if pattern == "flaky" and k == 0 and ScriptedVerifier.seen[completion] == 1:
            return Verdict(VerdictKind.TIMEOUT, 0.0, {})
        if pattern == "broken" and k == 0:
            return Verdict(VerdictKind.ERROR, 0.0, {})
        correct = pattern in ("mixed", "flaky", "broken") and k % 2 == 0
        return Verdict(VerdictKind.CORRECT if correct else VerdictKind.WRONG, float(correct), {})
