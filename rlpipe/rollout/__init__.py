"""Rollout engines: generate responses with sampled-token logprobs, and load new weights in place."""

from rlpipe.rollout.types import Completion, GenerationRequest, RolloutEngine, SamplingSettings

__all__ = ["ENGINES", "Completion", "GenerationRequest", "RolloutEngine", "SamplingSettings", "build_engine"]

# rollout.engine -> the class, imported only when asked for (vLLM is a heavy import).
ENGINES = {"vllm": "rlpipe.rollout.vllm_engine:VLLMEngine", "hf": "rlpipe.rollout.hf_engine:HFEngine"}


def build_engine(engine: str, **kwargs):
    """Build the engine named by ``rollout.engine`` (imports vLLM only when asked for)."""
    from rlpipe.registry import import_object

    if engine not in ENGINES:
        raise ValueError(f"unknown rollout.engine {engine!r}; valid: {', '.join(ENGINES)}")
    return import_object(ENGINES[engine])(**kwargs)
