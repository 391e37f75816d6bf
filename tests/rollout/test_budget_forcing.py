"""Budget forcing inside generation (rlpipe.rollout.budget): both engines close a thought that reaches the budget
with </think>, every response stays within budget + answer budget, and they force at the same position.

The micro model is randomly initialised: it almost never closes a thought by itself, so nearly every response here
shows a forced stop (checked: most responses hold a </think> exactly at the budget)."""

from __future__ import annotations

import pytest

from rlpipe.rollout.budget import ThinkTokens, forced_position, must_close, prompt_thought, thinking_tokens
from rlpipe.rollout.types import GenerationRequest, SamplingSettings

T = ThinkTokens(start_id=7, end_id=8)
ANSWER = 6


def test_counting_with_the_thought_opened_in_the_prompt():
    prompt = [1, 2, 7, 3]  # "<think>\n": one token of the thought is in the prompt
    carried = prompt_thought(prompt, T)
    assert carried == 1
    assert prompt_thought([1, 7, 3, 8, 4], T) is None  # closed in the prompt
    assert prompt_thought([1, 2], T) is None
    # budget 3: 1 carried + 2 generated -> the third response token must be </think>
    assert not must_close([5], T, carried, 3)
    assert must_close([5, 5], T, carried, 3)
    assert not must_close([5, 5, 8], T, carried, 3)  # closed: nothing more to force
    assert thinking_tokens([5, 5, 8, 9], T, carried) == 3
    assert forced_position([5, 5, 8, 9], T, carried, 3) == 2
    assert forced_position([5, 8, 9], T, carried, 3) is None  # closed by the model itself, before the budget


def test_counting_with_the_thought_opened_by_the_model():
    assert not must_close([5, 5, 5], T, None, 2)  # no thought opened: nothing to force
    assert must_close([5, 7, 5, 5], T, None, 2)
    assert thinking_tokens([5, 7, 5, 5, 8, 9], T, None) == 2
    assert forced_position([5, 7, 5, 5, 8, 9], T, None, 2) == 4
    assert thinking_tokens([5, 5], T, None) == 0


@pytest.fixture(scope="module")
def think_model_dir(tmp_path_factory):
    from rlpipe.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("think_model"), seed=0, size="micro", think_tokens=True)


def _reasoning_prompt(tokenizer) -> tuple[int, ...]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Compute 12 + 7 - 3."}],
                                         add_generation_prompt=True, tokenize=False, enable_thinking=True)
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def _check(completions, think, carried, budget):
    forced = 0
    for c in completions:
        assert len(c.response_ids) <= budget + ANSWER, c.response_ids
        assert thinking_tokens(c.response_ids, think, carried) <= budget
        if think.end_id not in c.response_ids:  # only a response that ended (EOS) inside its thought has none
            assert c.finish_reason == "stop" and len(c.response_ids) < budget
        at = forced_position(c.response_ids, think, carried, budget)
        if at is not None:
            forced += 1
            assert c.logprobs[at] == 0.0  # drawn from a distribution with all its mass on </think>
    assert forced >= len(completions) // 2  # the forcing did happen (a random model rarely closes a thought)
    return [forced_position(c.response_ids, think, carried, budget) for c in completions]


@pytest.mark.parametrize("budget", [4, 12])
def test_the_hf_engine_forces_the_end_of_a_full_thought(think_model_dir, budget):
    from rlpipe.rollout.hf_engine import HFEngine

    engine = HFEngine(str(think_model_dir))
    prompt = _reasoning_prompt(engine.tokenizer)
    carried = prompt_thought(prompt, engine.think)
    assert carried == 1  # "<think>\n" ends the reasoning-mode prompt
    out = engine.generate([GenerationRequest("q", prompt, 8, seed=3)],
                          SamplingSettings(1.0, 1.0, 64, thinking_budget_tokens=budget, answer_budget_tokens=ANSWER))
    _check(out, engine.think, carried, budget)
    plain = engine.generate([GenerationRequest("q", prompt, 8, seed=3)], SamplingSettings.unforced(1.0, 1.0, 64))
    assert max(len(c.response_ids) for c in plain) > budget + ANSWER  # without forcing the limit is the 64 tokens


def test_vllm_forces_inside_the_engine_as_the_hf_engine_does(think_model_dir):
    from rlpipe.rollout.vllm_engine import VLLMEngine

    engine = VLLMEngine(str(think_model_dir), seed=0, max_model_len=128, kv_cache_bytes=64 << 20)
    try:
        prompt = _reasoning_prompt(engine.tokenizer)
        carried = prompt_thought(prompt, engine.think)
        for budget in (4, 12):
            out = engine.generate([GenerationRequest("q", prompt, 16, seed=3)],
                                  SamplingSettings(1.0, 1.0, 64, thinking_budget_tokens=budget,
                                                   answer_budget_tokens=ANSWER))
            positions = _check(out, engine.think, carried, budget)
            # vLLM counts the prompt's share of the thought as the HF engine does: forced at budget - carried
            assert all(p == budget - carried for p in positions if p is not None)
            assert "</think>" in out[0].text or engine.think.end_id not in out[0].response_ids  # decoded, kept
    finally:
        engine.shutdown()
