"""What goes into and comes out of a rollout engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import torch


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float  # 0 = greedy
    top_p: float
    max_response_tokens: int
    # Budget forcing (rlpipe.rollout.budget): a thought that reaches this many tokens is closed by the engine, and the
    # response then ends within answer_budget_tokens more (the closing tag included). None: no forcing.
    thinking_budget_tokens: Optional[int]
    answer_budget_tokens: int

    @classmethod
    def unforced(cls, temperature: float, top_p: float, max_response_tokens: int) -> "SamplingSettings":
        """Sampling without budget forcing (held-out accuracy, scripts, tests)."""
        return cls(temperature, top_p, max_response_tokens, thinking_budget_tokens=None, answer_budget_tokens=0)

    @property
    def response_limit(self) -> int:
        """The most tokens a response may have: the generation limit, or the budgets when forcing is on."""
        if self.thinking_budget_tokens is None:
            return self.max_response_tokens
        return min(self.max_response_tokens, self.thinking_budget_tokens + self.answer_budget_tokens)


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str  # the prompt's uid, carried through so results can be matched after a re-queue
    prompt_ids: tuple[int, ...]
    num_samples: int
    seed: int  # per-request seed: sampling does not depend on how requests are batched or on which engine
    # At most this many new tokens (None: the sampling settings' limit). A multi-turn rollout's later turns get what
    # is left of the response budget (rlpipe.rollout.multi_turn).
    max_new_tokens: Optional[int] = None


@dataclass
class Completion:
    request_id: str
    sample_index: int  # 0..num_samples-1 within its request
    response_ids: list[int]
    # Sampled-token logprobs under the sampling distribution (after temperature), [len(response_ids)]; engines return
    # them as float32 (array('f')): exact for fp32 models, and half the bytes of Python floats on the way back.
    logprobs: Sequence[float]
    finish_reason: str  # "stop" (EOS / stop token) | "length" (hit max_response_tokens)
    text: str
    # The policy version whose weights generated it (learner updates before those weights), stamped by the driver's
    # rollout client: an engine serves a whole generate call with one set of weights.
    policy_version: int = 0
    # Multi-turn rollouts (rlpipe.rollout.multi_turn). ``token_mask`` [len(response_ids)]: True on the tokens the model
    # sampled, False on those an environment inserted (tool outputs and their chat markup, logprob 0); None: all the
    # model's. ``infra_error``: a tool could not run, so the sample is dropped and counted, never scored.
    token_mask: Optional[Sequence[bool]] = None
    turns: int = 1
    tool_calls: int = 0
    tool_errors: int = 0
    env_reward: float = 0.0
    infra_error: Optional[str] = None

    @property
    def sampled_logprobs(self) -> list[float]:
        """The logprobs of the tokens the model sampled: an environment's inserted tokens (logprob 0) left out, or
        they would raise the confidence of every rollout that called a tool."""
        if self.token_mask is None:
            return list(self.logprobs)
        return [lp for lp, own in zip(self.logprobs, self.token_mask) if own]

    @property
    def confidence(self) -> float:
        """The policy's own confidence in this sample: the mean logprob of the tokens it sampled (0 if none)."""
        sampled = self.sampled_logprobs
        return sum(sampled) / max(1, len(sampled))

    @property
    def scorable_text(self) -> Optional[str]:
        """The text a verifier scores, or None for a rollout a tool could not serve (never scored as wrong)."""
        return self.text if self.infra_error is None else None


class RolloutEngine(Protocol):
    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingSettings) -> list[Completion]: ...

    def load_weights(self, named_tensors: dict[str, torch.Tensor]) -> None: ...

    def sleep(self) -> None: ...

    def wake_up(self) -> None: ...
