"""data=tool_arithmetic: the teacher's conversations are what the environment would really answer, and supervised
encoding trains the assistant turns only."""

from __future__ import annotations

import random

from rlpipe.agents.env import ToolEnvironment
from rlpipe.tasks.tool_arithmetic import heldout_set, make_problem, teacher_messages, teacher_traces


def test_problems_are_products_and_the_heldout_set_is_never_trained():
    p = make_problem(random.Random(3), "x")
    a, b = p.operands
    assert p.question == f"Compute {a} * {b}." and p.answer == a * b and 100 <= a <= 999 and 11 <= b <= 99
    heldout = {q.question for q in heldout_set(64)}
    rows = teacher_traces(2000, seed=0, tool_rate=0.3, exclude=heldout, bad_call_rate=0.2)
    assert not heldout & {r["messages"][0]["content"] for r in rows}
    calls = [r for r in rows if len(r["messages"]) == 4]
    bad = [r for r in calls if r["messages"][2]["content"].startswith("error:")]
    assert 0.25 < len(calls) / len(rows) < 0.35 and 0.15 < len(bad) / len(calls) < 0.25


def test_the_teachers_tool_turns_are_what_the_calculator_environment_answers():
    env = ToolEnvironment(tools=["calculator"])
    for bad_call in (False, True):
        user, call, tool, answer = teacher_messages(make_problem(random.Random(5), "x"), True, bad_call)
        env.reset()
        step = env.step(call["content"])
        assert step.observation == tool["content"] and step.info["tool_errors"] == float(bad_call)
        assert env.step(answer["content"]).done


def test_supervised_encoding_trains_the_assistant_turns_and_not_the_tool_turn(micro_model_dir):
    from transformers import AutoTokenizer

    from rlpipe.tasks.conversations import ChatEncoder

    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    p = make_problem(random.Random(7), "x")
    example = ChatEncoder(tok).encode({"messages": teacher_messages(p, True)}, "x")
    trained = tok.decode([t for t, m in zip(example.response_ids, example.response_mask) if m])
    context = tok.decode([t for t, m in zip(example.response_ids, example.response_mask) if not m])
    assert '"expression": "' in trained and trained.endswith(f"\\boxed{{{p.answer}}}.<|im_end|>")
    assert context == f"\n<|im_start|>tool\n{p.answer}<|im_end|>\n<|im_start|>assistant\n"
