"""SPRM pure functions, with values worked out by hand."""

import math

import pytest
import torch

from rlpipe.algos.sprm import scale_grad, sprm_loss, step_end_mask, trajectory_scores

D, THINK, END_THINK, PAD = 9, 7, 8, 0  # delimiter, <think>, </think>, padding token ids


def _mask(rows, delims=(D,), think=(THINK, END_THINK)):
    t = max(len(r) for r in rows)
    ids = torch.tensor([r + [PAD] * (t - len(r)) for r in rows])
    resp = torch.tensor([[True] * len(r) + [False] * (t - len(r)) for r in rows])
    return step_end_mask(ids, resp, delims, *think).int().tolist()


def test_step_end_mask_scores_the_token_before_the_first_delimiter_of_a_run():
    #        a  b  D  c  D  D  e  D
    assert _mask([[1, 2, D, 3, D, D, 4, D]]) == [[0, 1, 0, 1, 0, 0, 1, 0]]


def test_step_end_mask_think_boundaries():
    # <think> D a D b </think> c D : the delimiter right after <think> ends no step; after </think> nothing counts
    assert _mask([[THINK, D, 1, D, 2, END_THINK, 3, D]]) == [[0, 0, 1, 0, 0, 0, 0, 0]]
    # no </think>: the whole response counts (an unfinished thought is still scored)
    assert _mask([[THINK, 1, D, 2, D]]) == [[0, 1, 0, 1, 0]]
    # without think tokens configured, the same rules minus the think ones; padding never counts
    assert _mask([[1, D], [2, 3, D, D]], think=(None, None)) == [[1, 0, 0, 0], [0, 1, 0, 0]]
    assert _mask([[1, 2], [D, 3]]) == [[0, 0], [0, 0]]  # a delimiter at position 0 has no token before it


def test_trajectory_score_is_the_geometric_mean_of_step_probabilities():
    logits = torch.tensor([[0.0, math.log(3.0), 5.0], [1.0, 1.0, 1.0]])  # sigmoid: 0.5, 0.75
    mask = torch.tensor([[True, True, False], [False, False, False]])
    scores = trajectory_scores(logits, mask)
    assert scores[0].item() == pytest.approx(math.sqrt(0.5 * 0.75))
    assert scores[1].item() == 0.0  # no scored step


def test_sprm_loss_keeps_agreeing_steps_and_balances_classes():
    # trajectory 0 correct (label 1): steps with logits +2 (agrees), -1 (disagrees: dropped)
    # trajectory 1 wrong (label 0): steps -3, -0.5 (both agree)
    # trajectory 2 excluded (label -1)
    logits = torch.tensor([[2.0, -1.0], [-3.0, -0.5], [4.0, 4.0]], requires_grad=True)
    mask = torch.ones(3, 2, dtype=torch.bool)
    labels = torch.tensor([1.0, 0.0, -1.0])
    loss, metrics = sprm_loss(logits, mask, labels)
    bce_pos = math.log1p(math.exp(-2.0))
    bce_neg = [math.log1p(math.exp(-3.0)), math.log1p(math.exp(-0.5))]
    # one positive, two negatives: each class gets half the weight
    expected = 0.5 * bce_pos + 0.5 * sum(bce_neg) / 2
    assert loss.item() == pytest.approx(expected)
    assert metrics["sprm/kept_frac"].item() == pytest.approx(3 / 4)
    assert metrics["sprm/pos_frac"].item() == pytest.approx(1 / 3)
    loss.backward()
    assert logits.grad[0, 1] == 0 and (logits.grad[2] == 0).all()  # dropped and excluded steps get no gradient

    weighted, _ = sprm_loss(logits, mask, labels, positive_weight=1.5)
    # weights: positive 1.5 * 0.5, negatives 0.5 / 2 each; normalised by their sum 1.25
    assert weighted.item() == pytest.approx((0.75 * bce_pos + 0.25 * sum(bce_neg)) / 1.25)


def test_sprm_loss_with_nothing_kept_is_zero_and_differentiable():
    logits = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, metrics = sprm_loss(logits, torch.ones(1, 2, dtype=torch.bool), torch.tensor([1.0]))
    assert loss.item() == 0.0 and metrics["sprm/kept_frac"].item() == 0.0
    loss.backward()


def test_scale_grad_leaves_the_forward_and_scales_the_backward():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = scale_grad(x, 1e-4)
    assert torch.equal(y, x)
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([1e-4, 2e-4, 3e-4]))


def test_sprm_loss_without_the_agreement_filter_uses_every_scored_step():
    logits = torch.tensor([[2.0, -1.0], [-3.0, -0.5]])
    loss, metrics = sprm_loss(logits, torch.ones(2, 2, dtype=torch.bool), torch.tensor([1.0, 0.0]),
                              agreement_filter=False)
    bce_pos = [math.log1p(math.exp(-2.0)), math.log1p(math.exp(1.0))]
    bce_neg = [math.log1p(math.exp(-3.0)), math.log1p(math.exp(-0.5))]
    assert loss.item() == pytest.approx(0.5 * sum(bce_pos) / 2 + 0.5 * sum(bce_neg) / 2)
    assert metrics["sprm/kept_frac"].item() == 1.0
