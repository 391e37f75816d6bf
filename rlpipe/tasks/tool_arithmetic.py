"""``data=tool_arithmetic``: products too long to work out in the head, where calling the calculator is the way to
be right (docs/agents.md).

    Compute 347 * 28.

Answered in one turn, ``The answer is \\boxed{9716}.``, or with a tool call first:

    <tool_call>{"name": "calculator", "arguments": {"expression": "347 * 28"}}</tool_call>
    (tool) 9716
    The answer is \\boxed{9716}.

Why this task: the tiny model cannot multiply a three-digit number by a two-digit one in one shot (there are no
worked steps to imitate), but it can copy digits: the expression from the question into the call, the result from
the tool's answer into the box. The warm-start teacher always knows the product, and calls the tool on only a few
of its traces (``tool_rate``), so the warm-started model answers mostly from its head and mostly wrong; RL has to
find out that the rollouts that call the tool are the ones that are right. Answers are exact integers, scored by
the arithmetic verifier.
"""

from __future__ import annotations

import random
from typing import Any

from rlpipe.agents.tool_call import format_tool_call
from rlpipe.tasks.arithmetic import Problem, heldout_set as _heldout_set

TOOLS = ("calculator",)  # what the task's environment offers (rollout.tools)


def make_problem(rng: random.Random, uid: str, operations: tuple[int, ...] = ()) -> Problem:
    """``a * b`` with a in [100, 999] and b in [11, 99] (``operations`` is the arithmetic task's knob, unused)."""
    a, b = rng.randint(100, 999), rng.randint(11, 99)
    return Problem(uid, f"Compute {a} * {b}.", (a, b), ("*",), a * b)


def expression(problem: Problem) -> str:
    return f"{problem.operands[0]} * {problem.operands[1]}"


def answer_text(problem: Problem) -> str:
    return f"The answer is \\boxed{{{problem.answer}}}."


def teacher_messages(problem: Problem, use_tool: bool) -> list[dict[str, str]]:
    """The teacher's conversation: the answer at once, or a calculator call, its result, then the answer."""
    user = {"role": "user", "content": problem.question}
    if not use_tool:
        return [user, {"role": "assistant", "content": answer_text(problem)}]
    call = format_tool_call("calculator", {"expression": expression(problem)})
    return [user, {"role": "assistant", "content": call}, {"role": "tool", "content": str(problem.answer)},
            {"role": "assistant", "content": answer_text(problem)}]


def teacher_row(problem: Problem, tool_rate: float, rng: random.Random) -> dict[str, Any]:
    """One supervised row (TRL's ``messages`` format, with the gold answer); the tool is used at ``tool_rate``."""
    return {"id": problem.uid, "answer": str(problem.answer),
            "messages": teacher_messages(problem, rng.random() < tool_rate)}


def heldout_set(n: int = 256, seed: int = 1235) -> list[Problem]:
    return _heldout_set(n, seed, make=make_problem)


def teacher_traces(n: int, seed: int, tool_rate: float, exclude=()) -> list[dict[str, Any]]:
    """``n`` teacher rows on fresh problems (none of whose questions is in ``exclude``), from one seeded stream."""
    rng, excluded, rows = random.Random(seed), set(exclude), []
    while len(rows) < n:
        p = make_problem(rng, f"teacher-{seed}-{len(rows)}")
        if p.question not in excluded:
            rows.append(teacher_row(p, tool_rate, rng))
    return rows


def tokenizer_texts(seed: int, n: int = 1500) -> list[str]:
    """Chat-rendered teacher conversations (half with a tool call) for training the tiny tokenizer, so the call's
    JSON becomes a few tokens."""
    rng, texts = random.Random(seed), []
    for i in range(n):
        p = make_problem(rng, f"tok-{i}")
        texts.append("".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
                             for m in teacher_messages(p, use_tool=i % 2 == 0)))
    return texts
