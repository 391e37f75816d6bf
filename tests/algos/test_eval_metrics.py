"""Evaluation metrics, against values worked out by hand."""

import math

import pytest
import torch

from rlpipe.algos.metrics import auroc, best_of_n, grouped_auroc, majority_at_k, pass_at_k, within_question_auroc


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(4, 2))  # 0.5
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 3, 2) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 4)


def test_majority_vote_in_groups():
    answers = [["7", "8", "7", "9", "9", "9", None, None]]
    correct = torch.tensor([[True, False, True, False, False, False, False, False]])
    # groups of 4: [7, 8, 7, 9] -> 7 (correct); [9, 9, None, None] -> 9 (wrong)
    assert majority_at_k(answers, correct, 4) == pytest.approx(0.5)
    # groups of 2: [7,8] tie -> the earliest (7, correct); [7,9] -> 7 correct; [9,9] wrong; [None,None] wrong
    assert majority_at_k(answers, correct, 2) == pytest.approx(0.5)


def test_best_of_n_picks_the_highest_score_in_each_group():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.2], [0.3, 0.2, 0.8, 0.9]])
    correct = torch.tensor([[False, True, False, True], [True, False, False, True]])
    assert best_of_n(scores, correct, 2) == pytest.approx((1 + 0 + 1 + 1) / 4)  # picks 1, 2(0.5), 0, 3
    assert best_of_n(scores, correct, 4) == pytest.approx((1 + 1) / 2)


def test_auroc():
    assert auroc(torch.tensor([0.9, 0.8, 0.3, 0.1]), torch.tensor([1, 1, 0, 0])) == 1.0
    assert auroc(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([1, 1, 0, 0])) == 0.0
    assert auroc(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])) == 0.5  # a tie counts one half
    assert auroc(torch.tensor([0.9, 0.4, 0.6, 0.1]), torch.tensor([1, 1, 0, 0])) == pytest.approx(3 / 4)
    assert math.isnan(auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])))


def test_within_question_auroc_ignores_difficulty():
    # Pooled, the score separates the easy question (all right, high scores) from the hard one: AUROC looks good.
    # Within each question it ranks backwards, which is what best-of-N sees.
    scores = torch.tensor([[0.9, 0.8, 0.85], [0.1, 0.3, 0.2]])
    correct = torch.tensor([[False, True, True], [False, True, False]])
    assert auroc(scores.flatten(), correct.flatten()) > 0.5
    assert within_question_auroc(scores, correct) == pytest.approx((0.0 + 1.0) / 2)
    assert math.isnan(within_question_auroc(scores[:, :1], correct[:, :1]))


def test_grouped_auroc_takes_groups_of_any_size_and_skips_one_outcome_groups():
    # group 0 (3 samples) ranked right, group 1 (2 samples) ranked backwards, group 2 all correct: skipped
    scores = torch.tensor([0.9, 0.1, 0.2, 0.3, 0.7, 0.5, 0.6])
    correct = torch.tensor([True, False, False, True, False, True, True])
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    assert grouped_auroc(scores, correct, groups) == pytest.approx((1.0 + 0.0) / 2)
    assert math.isnan(grouped_auroc(scores[5:], correct[5:], groups[5:]))
