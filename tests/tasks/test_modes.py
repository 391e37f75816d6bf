"""Reasoning / non-reasoning modes: the chat-template switch, the token-ratio mixing of SFT rows, the verifier's mode
rules, and the arithmetic task's graded difficulty."""

from __future__ import annotations

import random

import pytest

from rlpipe.tasks.arithmetic import make_problem, solution_text, step_results, teacher_traces
from rlpipe.tasks.modes import TokenRatioMixer, template_kwargs
from rlpipe.verify.arithmetic import ArithmeticVerifier
from rlpipe.verify.batch_scorer import score_in_mode
from rlpipe.verify.modes import response_format
from rlpipe.verify.types import VerdictKind


@pytest.fixture(scope="module")
def think_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from rlpipe.models.tiny import build_tiny_model

    return AutoTokenizer.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("m"), size="micro",
                                                          think_tokens=True))


def test_the_template_switch_opens_the_thought_only_in_reasoning_mode(think_tokenizer):
    messages = [{"role": "user", "content": "Compute 2 + 3."}]

    def render(mode):
        return think_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                                   **template_kwargs(mode))

    assert render("reasoning").endswith("<|im_start|>assistant\n<think>\n")
    assert render("non_reasoning").endswith("<|im_start|>assistant\n")
    assert render("none") == render("non_reasoning")  # without modes the default job's prompt is unchanged
    start, end = think_tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    ids = think_tokenizer("<think>\n1</think>", add_special_tokens=False)["input_ids"]
    assert ids[0] == start and ids[-1] == end  # one token each
    assert think_tokenizer.decode(ids, skip_special_tokens=True) == "<think>\n1</think>"  # kept in decoded text


def test_sft_rows_are_rendered_in_their_mode_and_train_only_the_answer_part(think_tokenizer):
    from rlpipe.tasks.conversations import ChatEncoder

    p = make_problem(random.Random(0), "p", operations=(2,))
    results = step_results(p)
    encoder = ChatEncoder(think_tokenizer)
    for mode in ("reasoning", "non_reasoning"):
        row = {"messages": [{"role": "user", "content": p.question},
                            {"role": "assistant", "content": solution_text(p, results, mode=mode)}], "mode": mode}
        ex = encoder.encode(row, "u")
        prompt, response = think_tokenizer.decode(ex.prompt_ids), think_tokenizer.decode(ex.response_ids)
        if mode == "reasoning":  # "<think>\n" comes with the prompt, as the engine will see it
            assert prompt.endswith("assistant\n<think>\n") and response.count("</think>") == 1
        else:
            assert prompt.endswith("assistant\n") and response == f"The answer is \\boxed{{{p.answer}}}.<|im_end|>"
        assert all(ex.response_mask)


def test_the_mixer_keeps_the_token_ratio_within_one_row():
    mixer = TokenRatioMixer(1.5)
    lengths = {"reasoning": 30, "non_reasoning": 10}
    picks = []
    for _ in range(40):
        mode = mixer.next_mode()
        picks.append(mode)
        mixer.record(mode, lengths[mode])
    # first row non-reasoning (0 < 1.5 * 0 is false); then reasoning (0 < 15), then 30 >= 15: non-reasoning ...
    assert picks[:4] == ["non_reasoning", "reasoning", "non_reasoning", "non_reasoning"]
    r, n = mixer.tokens["reasoning"], mixer.tokens["non_reasoning"]
    assert abs(r - 1.5 * n) <= 30  # never more than one reasoning row away from the ratio
    restored = TokenRatioMixer(1.5)
    restored.load_state_dict(mixer.state_dict())
    assert restored.next_mode() == mixer.next_mode()


def test_mixed_teacher_traces_hit_the_ratio_by_trained_tokens():
    rows = teacher_traces(300, seed=0, slip_rate=0.6, mode="mixed", reasoning_ratio=1.5,
                          operations=(1, 2, 3, 4), count_tokens=lambda row: len(row["messages"][-1]["content"]))
    chars = {"reasoning": 0, "non_reasoning": 0}
    for row in rows:
        chars[row["mode"]] += len(row["messages"][-1]["content"])
        assert ("<think>" in row["messages"][-1]["content"]) == (row["mode"] == "reasoning")
    assert 1.4 < chars["reasoning"] / chars["non_reasoning"] < 1.6


def test_default_teacher_rows_have_no_mode_and_the_default_problem_draws():
    row = teacher_traces(1, seed=0, slip_rate=0.6)[0]
    assert "mode" not in row and "<think>" not in row["messages"][-1]["content"]
    a, b = random.Random(5), random.Random(5)
    assert make_problem(a, "x") == make_problem(b, "x", operations=(2, 3))  # the default job's draws are unchanged


def test_graded_difficulty_draws_every_operation_count():
    rng = random.Random(0)
    counts = {len(make_problem(rng, "x", operations=(1, 2, 3, 4)).operators) for _ in range(200)}
    assert counts == {1, 2, 3, 4}


@pytest.mark.parametrize("text, mode, followed", [
    ("12 + 3 = 15.\n\n</think>\n\nThe answer is \\boxed{15}.", "reasoning", True),  # <think> was in the prompt
    ("<think>12 + 3 = 15.</think>The answer is \\boxed{15}.", "reasoning", True),
    ("12 + 3 = 15. The answer is \\boxed{15}.", "reasoning", False),  # never closed its thought
    ("a</think>b</think>\\boxed{15}", "reasoning", False),
    ("12 + 3 = 15.</think>  ", "reasoning", False),  # nothing after the thought
    ("The answer is \\boxed{15}.", "non_reasoning", True),
    ("<think>12 + 3 = 15</think>The answer is \\boxed{15}.", "non_reasoning", False),
    ("</think>The answer is \\boxed{15}.", "non_reasoning", False),
])
def test_response_format_rules(text, mode, followed):
    assert response_format(text, mode)[0] is followed


def test_the_verifier_grades_after_the_thought_and_fails_a_thought_in_non_reasoning_mode():
    v = ArithmeticVerifier(parse_fail_reward=-0.5)
    gold = {"answer": "15"}
    ok = score_in_mode(v, "12 + 3 = 15.\n\n</think>\n\nThe answer is \\boxed{15}.", {**gold, "mode": "reasoning"})
    assert ok.kind == VerdictKind.CORRECT and ok.details["format_followed"]
    # the only boxed answer is inside the thought: nothing after </think> to grade
    inside = score_in_mode(v, "\\boxed{15}</think>\n\nI am done.", {**gold, "mode": "reasoning"})
    assert inside.kind == VerdictKind.PARSE_FAIL and not inside.details["format_followed"]
    thought = score_in_mode(v, "<think>x</think>The answer is \\boxed{15}.", {**gold, "mode": "non_reasoning"})
    assert thought.kind == VerdictKind.PARSE_FAIL and thought.reward == -0.5
    assert thought.details["reason"] == "think block in non-reasoning mode"
    plain = score_in_mode(v, "The answer is \\boxed{14}.", {**gold, "mode": "non_reasoning"})
    assert plain.kind == VerdictKind.WRONG and plain.details["format_followed"]
    assert score_in_mode(v, "The answer is \\boxed{15}.", gold).kind == VerdictKind.CORRECT  # no mode: as before


def test_a_stated_budget_is_appended_to_the_prompt_and_kept_in_the_gold():
    from rlpipe.config.schema import DataConfig
    from rlpipe.driver.prompts import PromptItem, frame_heldout, frame_training

    item = PromptItem("u1", ({"role": "user", "content": "Compute 2 + 3."},), {"answer": "5"})
    data = DataConfig(mode="reasoning", stated_budget_tokens=[16, 32])
    framed = frame_training(item, data)
    n = framed.gold["budget_tokens"]
    assert n in (16, 32) and framed.mode == "reasoning"
    assert framed.messages[-1]["content"] == f"Compute 2 + 3. Think for at most {n} tokens."
    assert frame_training(item, data) == framed  # by the uid: the same budget after a resume
    assert item.messages[-1]["content"] == "Compute 2 + 3."  # the original is untouched
    both = frame_heldout([item], DataConfig(mode="mixed"))
    assert [(p.uid, p.mode) for p in both] == [("u1@reasoning", "reasoning"), ("u1@non_reasoning", "non_reasoning")]
