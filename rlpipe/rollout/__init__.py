"""Rollout engines: generate responses with sampled-token logprobs, and load new weights in place."""

from typing import Optional

from rlpipe.rollout.types import Completion, GenerationRequest, RolloutEngine, SamplingSettings

__all__ = ["ENGINES", "Completion", "GenerationRequest", "RolloutEngine", "SamplingSettings", "build_engine"]

# rollout.engine -> the class, imported only when asked for (vLLM is a heavy import).
ENGINES = {"vllm": "rlpipe.rollout.vllm_engine:VLLMEngine", "hf": "rlpipe.rollout.hf_engine:HFEngine"}


def build_engine(engine: str, multi_turn: Optional[dict] = None, **kwargs):
    """Build the engine named by ``rollout.engine`` (imports vLLM only when asked for); with ``multi_turn``
    (``rollout.environment`` set: the environment, its options, ``max_turns``) wrapped to roll out turn by turn
    (rlpipe.rollout.multi_turn)."""
    from rlpipe.registry import import_object

    if engine not in ENGINES:
        raise ValueError(f"unknown rollout.engine {engine!r}; valid: {', '.join(ENGINES)}")
    inner = import_object(ENGINES[engine])(**kwargs)
    if multi_turn is None:
        return inner
    from rlpipe.rollout.multi_turn import MultiTurnEngine

    return MultiTurnEngine(inner, **multi_turn)
