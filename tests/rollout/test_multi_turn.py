"""Multi-turn rollouts, token in and token out (issue 16, point 2): the ids trained on are exactly the ids the engine
sampled and the tool returned, the loss mask covers exactly the model's tokens, and the learner's logprobs of those
tokens equal the engine's. Real vLLM (CPU build), a micro Qwen2 model briefly taught the tool-call format, the real
calculator; the recorder below only watches the real engine's calls."""

from __future__ import annotations

import random

import pytest
import torch

from conftest import free_port
from rlpipe.agents.env import ToolEnvironment
from rlpipe.agents.tool_call import format_tool_call
from rlpipe.rollout.multi_turn import MultiTurnEngine, ObservationRenderer
from rlpipe.rollout.types import GenerationRequest, SamplingSettings
from support import learner_rank

pytestmark = pytest.mark.component


@pytest.fixture(scope="module")
def tool_model_dir(tool_micro_model):
    """A micro model supervised for a few seconds on tool_arithmetic traces, half of them calling the calculator."""
    return tool_micro_model


class Recorder:
    """Forwards to the real engine and keeps every call's requests and completions."""

    def __init__(self, engine):
        self.engine, self.tokenizer, self.calls = engine, engine.tokenizer, []

    def generate(self, requests, sampling):
        out = self.engine.generate(requests, sampling)
        self.calls.append((list(requests), out))
        return out


def _prompt_ids(tok, question: str) -> tuple[int, ...]:
    text = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                   tokenize=False)
    return tuple(tok(text, add_special_tokens=False)["input_ids"])


def test_observation_ids_are_the_chat_templates_tool_turn(tool_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tool_model_dir)
    ids = ObservationRenderer(tok).ids("9716")
    assert tok.decode(ids) == "\n<|im_start|>tool\n9716<|im_end|>\n<|im_start|>assistant\n"
    # The same ids as the whole conversation rendered and encoded at once, from the model's end of turn on.
    whole = tok.apply_chat_template([{"role": "user", "content": "Compute 2 * 3."},
                                     {"role": "assistant", "content": "x"}, {"role": "tool", "content": "9716"}],
                                    add_generation_prompt=True, tokenize=False)
    whole_ids = tok(whole, add_special_tokens=False)["input_ids"]
    assert whole_ids[-len(ids):] == ids


def test_tool_environment_runs_calls_and_reports_errors():
    env = ToolEnvironment(tools=["calculator"])
    env.reset()
    step = env.step("hm " + format_tool_call("calculator", {"expression": "347 * 28"}))
    assert (step.observation, step.done, step.info) == ("9716", False, {"tool_calls": 1.0, "tool_errors": 0.0})
    bad = env.step('<tool_call>{"name": "calculator", "arguments": </tool_call>')
    assert bad.observation.startswith("error: tool call is not JSON (") and not bad.done
    assert bad.info["tool_errors"] == 1.0
    unknown = env.step(format_tool_call("python", {"code": "print(1)"}))
    assert unknown.observation.startswith("error: unknown tool 'python'")
    assert env.step("The answer is \\boxed{9716}.").done
    env.close()


def test_multi_turn_rollouts_train_exactly_the_engines_and_tools_tokens(tool_model_dir):
    from rlpipe.driver.clients import _shard
    from rlpipe.driver.collect import Rollouts
    from rlpipe.rollout.vllm_engine import VLLMEngine

    recorder = Recorder(VLLMEngine(str(tool_model_dir), seed=0, max_model_len=256, kv_cache_bytes=64 << 20))
    engine = MultiTurnEngine(recorder, environment="tools", environment_options={"tools": ["calculator"]},
                             max_turns=3)
    tok = recorder.tokenizer
    rng = random.Random(0)
    requests = [GenerationRequest(f"p{i}", _prompt_ids(tok, f"Compute {rng.randint(100, 999)} * "
                                                          f"{rng.randint(11, 99)}."), 8, 10 + i) for i in range(8)]
    completions = engine.generate(requests, SamplingSettings.unforced(1.0, 1.0, 96))
    recorder.engine.shutdown()  # releases the process group it created, for the learner below
    assert len(completions) == 64

    # Rebuild every trajectory from what the engine was asked and answered, turn by turn.
    prompt_of = {r.request_id: r.prompt_ids for r in requests}
    opening = tok("\n<|im_start|>tool\n", add_special_tokens=False)["input_ids"]
    closing = tok("<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    multi_turn = 0
    for c in completions:
        turns = [(req, out) for requests_, outs in recorder.calls for req, out in zip(requests_, outs)
                 if req.request_id == f"{c.request_id}#{c.sample_index}"]
        assert len(turns) == c.turns
        expected, mask = [], []
        for k, (req, out) in enumerate(turns):
            # token in: each turn continues the exact ids of the prompt and of everything before it
            assert req.prompt_ids == prompt_of[c.request_id] + tuple(expected)
            expected += out.response_ids
            mask += [True] * len(out.response_ids)
            # A tool answered every turn but the last (and the last too when the rollout was cut after it, then
            # with its output cut at the token limit): its output, encoded on its own, comes next.
            room = len(c.response_ids) - len(expected)
            if k + 1 < len(turns) or (room > 0 and out.finish_reason == "stop"):
                shown = _calculator_output(out.text)
                obs = opening + tok(shown, add_special_tokens=False)["input_ids"] + closing
                obs = obs if k + 1 < len(turns) else obs[:room]
                expected += obs
                mask += [False] * len(obs)
        assert list(c.response_ids) == expected
        assert list(c.token_mask) == mask
        multi_turn += c.turns > 1
    assert multi_turn >= 8, f"only {multi_turn} of 64 rollouts called the tool"

    # The learner's batch: the same ids, a loss only on the model's tokens, and the learner's logprobs of those
    # tokens equal the engine's (so the context it computes them in is the engine's).
    # What the driver sends a learner rank (rlpipe.driver.clients._shard), for all 64 samples.
    n = len(completions)
    group_of = {r.request_id: g for g, r in enumerate(requests)}
    rollouts = Rollouts([], requests, completions, torch.zeros(n), torch.zeros(n, dtype=torch.bool),
                        torch.tensor([group_of[c.request_id] for c in completions]), torch.zeros(n, dtype=torch.bool))
    shard = _shard(rollouts, torch.ones(n, dtype=torch.bool), [(i, 0) for i in range(n)])
    batch = shard.to_train_batch(range(len(completions)), tok.pad_token_id)
    p = batch.prompt_len
    for i, c in enumerate(completions):
        n = len(c.response_ids)
        assert batch.input_ids[i, p:p + n].tolist() == list(c.response_ids)
        assert batch.response_mask[i, :n].tolist() == list(c.token_mask)
        assert not batch.response_mask[i, n:].any()
    learner = learner_rank(tool_model_dir, free_port(), micro_batch_samples=64, with_reference=False,
                           temperature=1.0)
    learner_lp = learner.response_logprobs(shard)
    model_tokens = shard.token_mask
    gap = (learner_lp - shard.rollout_logprobs).abs()[model_tokens]
    print(f"{multi_turn}/64 multi-turn; max |engine - learner| logprob over model tokens {float(gap.max()):.2e}")
    assert float(gap.max()) < 1e-3
    assert float(shard.rollout_logprobs[~model_tokens].abs().max()) == 0.0  # inserted tokens carry no logprob
    learner.shutdown()


def _calculator_output(turn: str) -> str:
    """What the calculator environment answers to ``turn`` (computed here again, independently of the rollout)."""
    env = ToolEnvironment(tools=["calculator"])
    env.reset()
    return env.step(turn).observation


class ScriptedEngine:
    """Answers every turn with the same text (the point here is what happens after the turn, not generation)."""

    def __init__(self, tokenizer, text: str):
        self.tokenizer, self.ids = tokenizer, tokenizer(text, add_special_tokens=False)["input_ids"] + [
            tokenizer.eos_token_id]

    def generate(self, requests, sampling):
        from rlpipe.rollout.types import Completion

        return [Completion(r.request_id, 0, list(self.ids), [-0.5] * len(self.ids), "stop",
                           self.tokenizer.decode(self.ids, skip_special_tokens=True)) for r in requests]


def test_a_tool_that_cannot_run_drops_the_rollout_and_it_is_never_scored(tool_model_dir):
    """The real python tool with no usable sandbox raises ToolInfraError: the rollout ends with ``infra_error``, its
    ``scorable_text`` is None, and the verifier pool returns no verdict for it (counted), not a wrong one."""
    from transformers import AutoTokenizer

    from rlpipe.config.compose import load_config
    from rlpipe.driver.session import build_verifiers

    tok = AutoTokenizer.from_pretrained(tool_model_dir)
    engine = MultiTurnEngine(
        ScriptedEngine(tok, format_tool_call("python", {"code": "print(6 * 7)"})), environment="tools",
        environment_options={"tools": ["python"], "tool_options": {"python": {"bwrap": "/nonexistent/bwrap"}}})
    [broken] = engine.generate([GenerationRequest("p", _prompt_ids(tok, "Compute 2 * 3."), 1, 0)],
                               SamplingSettings.unforced(1.0, 1.0, 96))
    assert broken.infra_error and "bwrap" in broken.infra_error and broken.turns == 1
    assert broken.scorable_text is None
    verifiers = build_verifiers(load_config(["cluster=local"]))
    try:
        verdicts, counts = verifiers.score([(broken.scorable_text, {"answer": "6"}),
                                            ("The answer is \\boxed{6}.", {"answer": "6"})])
    finally:
        verifiers.group.shutdown()
    assert verdicts[0] is None and verdicts[1].reward == 1.0
    assert counts["tool_infra_dropped"] == 1 and counts["dropped"] == 0
