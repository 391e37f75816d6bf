"""Rollout engines: generate responses with sampled-token logprobs, and load new weights in place."""

from rlpipe.rollout.types import Completion, GenerationRequest, RolloutEngine, SamplingSettings

__all__ = ["Completion", "GenerationRequest", "RolloutEngine", "SamplingSettings", "build_engine"]


def build_engine(engine: str, **kwargs):
    """Build the engine named by ``rollout.engine`` (imports vLLM only when asked for)."""
    if engine == "vllm":
        from rlpipe.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(**kwargs)
    if engine == "hf":
        from rlpipe.rollout.hf_engine import HFEngine

        return HFEngine(**kwargs)
    raise ValueError(f"unknown rollout.engine {engine!r}; valid: vllm, hf")
