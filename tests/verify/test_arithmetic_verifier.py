import pytest

from rlpipe.verify.arithmetic import ArithmeticVerifier
from rlpipe.verify.extract import gsm8k_answer, last_boxed
from rlpipe.verify.types import VerdictKind

V = ArithmeticVerifier(correct_reward=1.0, wrong_reward=-1.0, parse_fail_reward=-2.0)


@pytest.mark.parametrize("text, kind, reward", [
    ("3 + 4 = 7.\n\nThe answer is \\boxed{7}.", VerdictKind.CORRECT, 1.0),
    ("The answer is \\boxed{ 7 }", VerdictKind.CORRECT, 1.0),
    ("\\boxed{5} then \\boxed{7}", VerdictKind.CORRECT, 1.0),  # the last box counts
    ("The answer is \\boxed{8}.", VerdictKind.WRONG, -1.0),
    ("The answer is \\boxed{-7}.", VerdictKind.WRONG, -1.0),
    ("The answer is 7.", VerdictKind.PARSE_FAIL, -2.0),
    ("\\boxed{seven}", VerdictKind.PARSE_FAIL, -2.0),
    ("\\boxed{7", VerdictKind.PARSE_FAIL, -2.0),
    ("\\boxed{\\frac{14}{2}}", VerdictKind.PARSE_FAIL, -2.0),
])
def test_verdicts(text, kind, reward):
    verdict = V.score(text, {"answer": "7"})
    assert verdict.kind == kind and verdict.reward == reward


def test_negative_gold_and_extraction_helpers():
    assert V.score("\\boxed{-3}", {"answer": "-3"}).kind == VerdictKind.CORRECT
    assert last_boxed("a \\boxed{\\frac{1}{2}} b") == "\\frac{1}{2}"
    assert last_boxed("\\fbox{x} and \\boxed{y}") == "y"
    assert gsm8k_answer("so 3 apples\n#### 1,234") == "1234"
