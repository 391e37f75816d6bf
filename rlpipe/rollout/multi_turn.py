"""Multi-turn rollouts: generate a turn, let the environment answer (a tool's output), continue, token in, token out.

One rollout (a *trajectory*) is the prompt followed by alternating spans:

    prompt | model turn 1 ... <|im_end|> | observation 1 | model turn 2 ... <|im_end|> | ...
             ^ sampled by the engine       ^ inserted      ^ sampled

- Each model turn is sampled by the wrapped engine from ``prompt_ids + every id so far``: the ids the engine itself
  produced and the observation ids inserted, never a decode and re-encode of earlier turns (the re-tokenization
  drift peers' users keep reporting). A turn ends where the model ends it (end-of-sequence).
- The environment reads the turn's text (``Environment.step``); its observation is rendered in the ``tool`` role of
  the model's own chat template (``ObservationRenderer``) and encoded once, on its own.
- ``token_mask`` marks the sampled tokens (True) and the inserted ones (False): only the model's tokens get a loss.
  Inserted tokens carry logprob 0 and are never trained on or compared.
- A trajectory ends at a turn without a tool call (``stop``), at ``max_turns`` model turns or at the response token
  limit (``length``: truncated, so DAPO's overlong filter applies to it as to a single-turn response).
- A tool that could not run at all (``ToolInfraError``) ends the trajectory with ``infra_error`` set: the driver drops
  and counts it; it is never scored.

The whole rollout is one ``generate`` call of the rollout actor, so one set of weights samples every turn of it (the
policy version stamped on the completion holds for all its tokens).
"""

from __future__ import annotations

import hashlib
import logging
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from rlpipe.agents.env import Environment, build_environment
from rlpipe.agents.tools import ToolInfraError
from rlpipe.rollout.types import Completion, GenerationRequest, SamplingSettings

log = logging.getLogger(__name__)
_TURN_TEXT, _OBSERVATION_TEXT = "\x1fRLPIPE-TURN\x1f", "\x1fRLPIPE-OBSERVATION\x1f"


class ObservationRenderer:
    """The ids that put an observation after an assistant turn the model ended with its end-of-sequence token.

    Found once from the chat template: ``[user, assistant: T, tool: O]`` rendered with a generation prompt; what
    follows T's end-of-sequence token up to O is the opening, what follows O the closing (the next assistant turn's
    header). ChatML: ``\\n<|im_start|>tool\\n`` + O + ``<|im_end|>\\n<|im_start|>assistant\\n``.
    """

    def __init__(self, tokenizer):
        eos = tokenizer.eos_token
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "?"}, {"role": "assistant", "content": _TURN_TEXT},
             {"role": "tool", "content": _OBSERVATION_TEXT}], add_generation_prompt=True, tokenize=False)
        if _TURN_TEXT not in text or _OBSERVATION_TEXT not in text:
            raise ValueError("the model's chat template does not render assistant and tool turns as given: it "
                             "cannot be used for multi-turn rollouts")
        after_turn = text[text.index(_TURN_TEXT) + len(_TURN_TEXT):]
        if not after_turn.startswith(eos):
            raise ValueError(f"the chat template does not end an assistant turn with the end-of-sequence token "
                             f"{eos!r}: the model could not end a turn itself")
        between = after_turn[len(eos):]
        opening, closing = between.split(_OBSERVATION_TEXT, 1)
        self._backend = tokenizer.backend_tokenizer if getattr(tokenizer, "is_fast", False) else None
        self.tokenizer = tokenizer
        self.opening_ids, self.closing_ids = self._ids(opening), self._ids(closing)

    def _ids(self, text: str) -> list[int]:
        if self._backend is not None:
            return self._backend.encode(text, add_special_tokens=False).ids
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def ids(self, observation: str) -> list[int]:
        return self.opening_ids + self._ids(observation) + self.closing_ids


@dataclass
class Trajectory:
    request: GenerationRequest
    sample_index: int
    env: Environment
    ids: list[int] = field(default_factory=list)
    token_mask: list[bool] = field(default_factory=list)
    logprobs: array = field(default_factory=lambda: array("f"))
    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    env_reward: float = 0.0
    finish: Optional[str] = None  # stop | length, once done
    infra_error: Optional[str] = None

    def add_turn(self, ids: Sequence[int], logprobs: Sequence[float]) -> None:
        self.ids.extend(ids)
        self.token_mask.extend([True] * len(ids))
        self.logprobs.extend(logprobs)
        self.turns += 1

    def add_observation(self, ids: Sequence[int]) -> None:
        self.ids.extend(ids)
        self.token_mask.extend([False] * len(ids))
        self.logprobs.extend([0.0] * len(ids))


def turn_seed(request_seed: int, sample_index: int, turn: int) -> int:
    """A sample's seed for one turn: the same request, sample and turn, the same draw (resume, restarts)."""
    digest = hashlib.sha256(f"{request_seed}/{sample_index}/{turn}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class MultiTurnEngine:
    """A rollout engine (``VLLMEngine``, ``HFEngine``) driven turn by turn through an environment; the same
    ``generate`` API, so the rollout client, actors and evaluation use it unchanged. Everything else (weights, sleep,
    fatal errors, shutdown) is the wrapped engine's."""

    def __init__(self, engine, *, environment: str, environment_options: Optional[dict[str, Any]] = None,
                 max_turns: int = 4, tool_workers: int = 4):
        if max_turns < 1:
            raise ValueError("rollout.max_turns must be at least 1")
        self.engine = engine
        self.environment, self.environment_options = environment, dict(environment_options or {})
        build_environment(environment, **self.environment_options).close()  # a bad name fails at start-up
        self.max_turns = max_turns
        self.renderer = ObservationRenderer(engine.tokenizer)
        self._pool = ThreadPoolExecutor(max_workers=max(1, tool_workers), thread_name_prefix="tool")

    def __getattr__(self, name: str):  # only for what this class does not define: the wrapped engine's
        engine = self.__dict__.get("engine")
        if engine is None:
            raise AttributeError(name)
        return getattr(engine, name)

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingSettings) -> list[Completion]:
        limit = sampling.response_limit
        trajectories = [Trajectory(req, k, build_environment(self.environment, **self.environment_options))
                        for req in requests for k in range(req.num_samples)]
        try:
            for t in trajectories:
                t.env.reset()
            active = list(trajectories)
            while active:
                active = self._turn(active, sampling, limit)
        finally:
            for t in trajectories:
                t.env.close()
        return [self._completion(t) for t in trajectories]

    def _turn(self, active: list[Trajectory], sampling: SamplingSettings, limit: int) -> list[Trajectory]:
        """One model turn for every active trajectory (one engine call), then the environments' answers."""
        requests = [GenerationRequest(f"{t.request.request_id}#{t.sample_index}", t.request.prompt_ids + tuple(t.ids),
                                      1, turn_seed(t.request.seed, t.sample_index, t.turns),
                                      max_new_tokens=limit - len(t.ids)) for t in active]
        outputs = {c.request_id: c for c in self.engine.generate(requests, sampling)}
        ended = []
        for t, req in zip(active, requests):
            out = outputs[req.request_id]
            t.add_turn(out.response_ids, out.logprobs)
            ended.append(out.finish_reason == "length")
        steps = list(self._pool.map(_step, [t.env for t in active], [outputs[r.request_id].text for r in requests],
                                    ended))
        going = []
        for t, step in zip(active, steps):
            if isinstance(step, ToolInfraError):
                t.finish, t.infra_error = "stop", str(step) or type(step).__name__
                continue
            if step is None:  # the turn hit the token limit: truncated
                t.finish = "length"
                continue
            t.env_reward += step.reward
            t.tool_calls += int(step.info.get("tool_calls", 0))
            t.tool_errors += int(step.info.get("tool_errors", 0))
            if step.done:
                t.finish = "stop"
                continue
            observation = self.renderer.ids(step.observation or "")
            room = limit - len(t.ids)
            if t.turns >= self.max_turns or len(observation) >= room:  # no room for another model turn
                t.add_observation(observation[:room])
                t.finish = "length"
                continue
            t.add_observation(observation)
            going.append(t)
        return going

    def _completion(self, t: Trajectory) -> Completion:
        return Completion(
            request_id=t.request.request_id, sample_index=t.sample_index, response_ids=t.ids, logprobs=t.logprobs,
            finish_reason=t.finish or "length", text=self.engine.tokenizer.decode(t.ids, skip_special_tokens=True),
            token_mask=t.token_mask, turns=t.turns, tool_calls=t.tool_calls, tool_errors=t.tool_errors,
            env_reward=t.env_reward, infra_error=t.infra_error)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False)
        if hasattr(self.engine, "shutdown"):
            self.engine.shutdown()


def _step(env: Environment, text: str, truncated: bool):
    """The environment's answer to a finished turn (None for a truncated one); a ToolInfraError is returned, not
    raised, so one broken tool ends its own rollout and not the whole call."""
    if truncated:
        return None
    try:
        return env.step(text)
    except ToolInfraError as e:
        log.warning("tool infrastructure failure (the rollout is dropped, not scored): %s", e)
        return e
