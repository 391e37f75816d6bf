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
find out that the rollouts that call the tool are the ones that are right. Some of the teacher's calls are written
``347 x 28`` (``bad_call_rate``), which the calculator refuses; the teacher then answers from its head, so the
imitating model does too, and RL also has to learn to write calls that run. Answers are exact integers, scored by
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


def teacher_messages(problem: Problem, use_tool: bool, bad_call: bool = False) -> list[dict[str, str]]:
    """The teacher's conversation: the answer at once, or a calculator call, its result, then the answer. A
    ``bad_call`` writes ``a x b``: the result is the calculator's refusal (what rlpipe.agents.calculator answers)."""
    user = {"role": "user", "content": problem.question}
    if not use_tool:
        return [user, {"role": "assistant", "content": answer_text(problem)}]
    written = expression(problem).replace("*", "x") if bad_call else expression(problem)
    call = format_tool_call("calculator", {"expression": written})
    result = f"error: calculator: cannot parse {written!r}" if bad_call else str(problem.answer)
    return [user, {"role": "assistant", "content": call}, {"role": "tool", "content": result},
            {"role": "assistant", "content": answer_text(problem)}]


def teacher_row(problem: Problem, tool_rate: float, rng: random.Random, bad_call_rate: float = 0.0) -> dict[str, Any]:
    """One supervised row (TRL's ``messages`` format, with the gold answer); the tool is used at ``tool_rate``, and a
    call is written badly at ``bad_call_rate``."""
    use_tool = rng.random() < tool_rate
    bad_call = use_tool and bad_call_rate > 0 and rng.random() < bad_call_rate
    return {"id": problem.uid, "answer": str(problem.answer),
            "messages": teacher_messages(problem, use_tool, bad_call)}


def heldout_set(n: int = 256, seed: int = 1235) -> list[Problem]:
    return _heldout_set(n, seed, make=make_problem)


def teacher_traces(n: int, seed: int, tool_rate: float, exclude=(), bad_call_rate: float = 0.0,
                   ) -> list[dict[str, Any]]:
    """``n`` teacher rows on fresh problems (none of whose questions is in ``exclude``), from one seeded stream."""
    rng, excluded, rows = random.Random(seed), set(exclude), []
    while len(rows) < n:
        p = make_problem(rng, f"teacher-{seed}-{len(rows)}")
        if p.question not in excluded:
            rows.append(teacher_row(p, tool_rate, rng, bad_call_rate))
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
