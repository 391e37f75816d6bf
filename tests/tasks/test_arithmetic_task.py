import random

from rlpipe.tasks.arithmetic import (STEP_DELIMITER, TrainStream, correct_solution, heldout_set, make_problem,
                                     needs_carry, step_results, teacher_solution)
from rlpipe.verify.arithmetic import ArithmeticVerifier
from rlpipe.verify.types import VerdictKind


def test_heldout_is_fixed_distinct_and_disjoint_from_training():
    a, b = heldout_set(256), heldout_set(256)
    assert [p.question for p in a] == [p.question for p in b]
    questions = {p.question for p in a}
    assert len(questions) == 256
    stream = TrainStream(seed=3, exclude=questions)
    assert not any(stream.next().question in questions for _ in range(5000))


def test_stream_cursor_resumes_exactly():
    s = TrainStream(seed=7)
    [s.next() for _ in range(10)]
    state = s.state_dict()
    expected = [s.next().question for _ in range(5)]
    resumed = TrainStream(seed=7)
    resumed.load_state_dict(state)
    assert [resumed.next().question for _ in range(5)] == expected


def test_clean_solutions_are_correct_and_use_the_step_delimiter():
    rng = random.Random(0)
    verifier = ArithmeticVerifier()
    for i in range(300):
        p = make_problem(rng, str(i))
        assert eval(p.question.removeprefix("Compute ").rstrip(".")) == p.answer  # noqa: S307 (our own digits)
        text = correct_solution(p)
        assert text.count(STEP_DELIMITER) == len(p.operators)
        assert verifier.score(text, {"answer": str(p.answer)}).kind == VerdictKind.CORRECT


def test_teacher_slips_only_on_carries_at_the_stated_rate():
    rng = random.Random(1)
    carries = slips = 0
    for i in range(4000):
        p = make_problem(rng, str(i))
        slipped = step_results(p, 0.6, random.Random(i))
        clean = step_results(p)
        left = p.operands[0]
        for op, x, got, want in zip(p.operators, p.operands[1:], slipped, clean):
            # compare the step in isolation: the slipped chain's own left operand
            true_step = left + x if op == "+" else left - x
            if needs_carry(left, op, x):
                carries += 1
                slips += got != true_step
                assert got in (true_step, true_step - 10 if op == "+" else true_step + 10)
            else:
                assert got == true_step
            left = got
    assert 0.55 < slips / carries < 0.65
    assert teacher_solution(p, 0.0, rng) == correct_solution(p)


def test_recheck_teacher_repeats_steps_without_changing_answers_and_zero_changes_nothing():
    import random

    from rlpipe.tasks.arithmetic import make_problem, teacher_solution, teacher_traces
    from rlpipe.verify.arithmetic import ArithmeticVerifier

    # rate 0: the warm-start's draws, row for row (problem, then its slips, from one Random)
    rng = random.Random(3)
    expected = []
    while len(expected) < 20:
        p = make_problem(rng, "x")
        expected.append(teacher_solution(p, 0.6, rng))
    assert [r["messages"][1]["content"] for r in teacher_traces(20, 3, 0.6)] == expected

    rows = teacher_traces(50, 0, 0.0, recheck_rate=1.0)  # a clean teacher that re-checks every step
    verifier = ArithmeticVerifier()
    for row in rows:
        text = row["messages"][1]["content"]
        steps = [line for line in text.split(".\n\n") if not line.startswith(("Check", "The answer"))]
        checks = [line.removeprefix("Check: ") for line in text.split(".\n\n") if line.startswith("Check")]
        assert checks == steps  # every step written again, unchanged
        assert verifier.score(text, {"answer": row["answer"]}).reward == 1.0
    lengths = [len(r["messages"][1]["content"]) for r in teacher_traces(200, 0, 0.0, recheck_rate=0.5)]
    assert max(lengths) > 1.5 * min(lengths)  # correct solutions of very different lengths
