"""Synthetic arithmetic: "Compute 27 + 8 - 9." solved in worked steps, each ending with the step delimiter.

    27 + 8 = 35.\\n\\n35 - 9 = 26.\\n\\nThe answer is \\boxed{26}.

Why this task: answers are exact integers (a verifier with no ambiguity), problems are unlimited and fresh (no
memorising a training set), and a tiny model can learn it in a minute, so the whole pipeline runs on a laptop.

The warm-start teacher (``teacher_solution``) is deliberately imperfect: when a step needs a carry (addition) or a
borrow (subtraction), it drops it with probability ``slip_rate``, writing a result off by ten. Supervised learning
copies that systematic slip, so the warm-started model's greedy answers are often wrong while sampled answers are
sometimes right; the verifier rewards only the true answer, so RL has real, measurable work to do: unlearn a habit
that imitation taught it. ``slip_rate=0`` gives a clean teacher.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable

STEP_DELIMITER = ".\n\n"


@dataclass(frozen=True)
class Problem:
    uid: str
    question: str
    operands: tuple[int, ...]
    operators: tuple[str, ...]  # "+" or "-", len(operands) - 1
    answer: int


DEFAULT_OPERATIONS = (2, 3)


def make_problem(rng: random.Random, uid: str, operations: tuple[int, ...] = DEFAULT_OPERATIONS) -> Problem:
    """A start in [10, 40] followed by single-digit additions / subtractions, as many as ``rng.choice(operations)``
    (the default job: two or three; graded difficulty for calibration: 1 to 4); values stay non-negative.

    Small enough that a 3M-parameter model learns it in a minute, while about half of the steps still need a carry
    or a borrow — the part a tiny model (and the deliberately sloppy teacher) gets wrong.
    """
    value = rng.randint(10, 40)
    operands, operators = [value], []
    for _ in range(rng.choice(operations)):
        operand = rng.randint(2, 9)
        if rng.random() < 0.5 and value - operand >= 0:
            value -= operand
            operators.append("-")
        else:
            value += operand
            operators.append("+")
        operands.append(operand)
    text = " ".join([str(operands[0])] + [f"{op} {x}" for op, x in zip(operators, operands[1:])])
    return Problem(uid, f"Compute {text}.", tuple(operands), tuple(operators), value)


def needs_carry(a: int, op: str, b: int) -> bool:
    """Addition whose units overflow, or subtraction whose units need a borrow."""
    return (a % 10 + b % 10 >= 10) if op == "+" else (a % 10 < b % 10)


def step_results(problem: Problem, slip_rate: float = 0.0, rng: random.Random | None = None) -> list[int]:
    """The running value after each step; with ``slip_rate`` > 0 a needed carry/borrow is dropped at that rate."""
    value, results = problem.operands[0], []
    for op, x in zip(problem.operators, problem.operands[1:]):
        true = value + x if op == "+" else value - x
        if slip_rate and rng is not None and needs_carry(value, op, x) and rng.random() < slip_rate:
            true = true - 10 if op == "+" else true + 10  # the dropped carry / forgotten borrow
        value = true
        results.append(value)
    return results


def solution_text(problem: Problem, results: Iterable[int], repeats: Iterable[bool] = (), mode: str = "none") -> str:
    """The worked steps; a step whose ``repeats`` flag is set is written again as "Check: ..." after itself.

    ``mode`` (rlpipe.tasks.modes): ``none`` the steps then the answer; ``reasoning`` the steps inside
    ``<think>…</think>``, then the answer; ``non_reasoning`` the answer alone.
    """
    lines, left, repeats = [], problem.operands[0], list(repeats)
    for k, (op, x, value) in enumerate(zip(problem.operators, problem.operands[1:], results)):
        lines.append(f"{left} {op} {x} = {value}")
        if k < len(repeats) and repeats[k]:
            lines.append(f"Check: {left} {op} {x} = {value}")
        left = value
    steps, answer = STEP_DELIMITER.join(lines) + STEP_DELIMITER, f"The answer is \\boxed{{{left}}}."
    if mode == "reasoning":
        return f"<think>\n{steps}</think>\n\n{answer}"
    return answer if mode == "non_reasoning" else steps + answer


def teacher_solution(problem: Problem, slip_rate: float, rng: random.Random, recheck_rate: float = 0.0,
                     mode: str = "none") -> str:
    """The teacher's solution: a needed carry dropped at ``slip_rate``; each step re-checked (written again) at
    ``recheck_rate``, which makes correct solutions of one problem differ in length (5 to 9 lines for three steps)
    without changing a result: the material a concision preference stage removes. ``recheck_rate=0`` draws nothing
    more from ``rng``, so the default teacher's traces are unchanged. In non-reasoning ``mode`` the teacher answers
    without writing its steps, slips included."""
    results = step_results(problem, slip_rate, rng)
    repeats = [rng.random() < recheck_rate for _ in results] if recheck_rate > 0 else []
    return solution_text(problem, results, repeats, mode)


def correct_solution(problem: Problem) -> str:
    return solution_text(problem, step_results(problem))


def to_messages(problem: Problem) -> list[dict[str, str]]:
    return [{"role": "user", "content": problem.question}]


def gold(problem: Problem) -> dict[str, Any]:
    return {"answer": str(problem.answer)}


def _rng(*parts: Any) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little"))


MakeProblem = Callable[[random.Random, str, tuple[int, ...]], Problem]


def heldout_set(n: int = 256, seed: int = 1235, operations: tuple[int, ...] = DEFAULT_OPERATIONS,
                make: MakeProblem = make_problem) -> list[Problem]:
    """A fixed list of ``n`` distinct problems (deterministic in ``seed`` and ``operations``); ``make`` draws one
    (another synthetic task: rlpipe.tasks.tool_arithmetic)."""
    problems, seen, i = [], set(), 0
    while len(problems) < n:
        p = make(_rng("heldout", seed, i), f"heldout-{seed}-{i}", tuple(operations))
        i += 1
        if p.question not in seen:
            seen.add(p.question)
            problems.append(p)
    return problems


class TrainStream:
    """An endless stream of fresh problems that never repeats a held-out question.

    Problem k is a pure function of (seed, k), so the cursor ``index`` is the whole state: a resumed run sees
    exactly the problems the uninterrupted run would have seen.
    """

    def __init__(self, seed: int, exclude: set[str] = frozenset(), operations: tuple[int, ...] = DEFAULT_OPERATIONS,
                 make: MakeProblem = make_problem):
        self.seed = seed
        self.exclude = set(exclude)
        self.operations = tuple(operations)
        self.make = make
        self.index = 0

    def next(self) -> Problem:
        while True:
            k = self.index
            self.index += 1
            p = self.make(_rng("train", self.seed, k), f"train-{self.seed}-{k}", self.operations)
            if p.question not in self.exclude:
                return p

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"prompt stream state is for seed {state['seed']}, this run uses seed {self.seed}")
        self.index = state["index"]


def teacher_traces(n: int, seed: int, slip_rate: float, exclude: Iterable[str] = (), recheck_rate: float = 0.0,
                   operations: tuple[int, ...] = DEFAULT_OPERATIONS, mode: str = "none", reasoning_ratio: float = 1.5,
                   count_tokens: Callable[[dict[str, Any]], int] = lambda row: len(row["messages"][-1]["content"]),
                   ) -> list[dict[str, Any]]:
    """``n`` supervised rows in TRL's ``messages`` format: the teacher (``teacher_solution``) on fresh problems, none
    of whose questions is in ``exclude``. Problems and slips come from one ``random.Random(seed)`` in the order the
    default job's warm-start draws them. Each row keeps its gold ``answer``.

    ``mode`` is a data mode (rlpipe.tasks.modes.DATA_MODES); ``mixed`` picks each row's mode so that reasoning :
    non-reasoning trained tokens (``count_tokens(row)``; default: characters of the solution) stay at
    ``reasoning_ratio``. Rows with a mode carry it (``"mode"``: the chat-template switch they are rendered with)."""
    from rlpipe.tasks.modes import TokenRatioMixer

    rng, excluded, rows = random.Random(seed), set(exclude), []
    mixer = TokenRatioMixer(reasoning_ratio) if mode == "mixed" else None
    while len(rows) < n:
        p = make_problem(rng, f"teacher-{seed}-{len(rows)}", tuple(operations))
        if p.question not in excluded:
            row_mode = mixer.next_mode() if mixer else mode
            rows.append(teacher_row(p, slip_rate, rng, recheck_rate, row_mode))
            if mixer:
                mixer.record(row_mode, count_tokens(rows[-1]))
    return rows


def teacher_row(problem: Problem, slip_rate: float, rng: random.Random, recheck_rate: float = 0.0,
                mode: str = "none") -> dict[str, Any]:
    """One supervised row (TRL's ``messages`` format, with the gold ``answer``): the teacher solving ``problem``."""
    solution = teacher_solution(problem, slip_rate, rng, recheck_rate, mode)
    row = {"id": problem.uid, "answer": str(problem.answer),
           "messages": to_messages(problem) + [{"role": "assistant", "content": solution}]}
    if mode != "none":
        row["mode"] = mode
    return row


def teacher_rows_for(problems: Iterable[Problem], slip_rate: float, seed: int, recheck_rate: float = 0.0,
                     mode: str = "none") -> list[dict[str, Any]]:
    """The teacher on given problems (e.g. the held-out set, for a held-out loss), each with its own seeded slips;
    ``mode`` one of rlpipe.tasks.modes.MODES."""
    return [teacher_row(p, slip_rate, _rng("teacher", seed, p.uid), recheck_rate, mode) for p in problems]
