"""The dense head's pooling (rlpipe.algos.dense_prm), against values worked out by hand."""

import math

import pytest
import torch

from rlpipe.algos.dense_prm import pool_steps, pool_trajectory, step_ids

# Two trajectories of 6 response tokens. Row 0: steps end at t=1 and t=3 → steps {0,1}, {2,3}, {4,5}.
# Row 1: one step end at t=0, the response is 4 tokens long → steps {0}, {1,2,3}; t=4,5 are padding.
STEP_END = torch.tensor([[0, 1, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
TOKENS = torch.tensor([[1.0, 3.0, -2.0, 4.0, 0.5, 0.5], [2.0, -1.0, 1.0, 3.0, -50.0, -50.0]])


def test_step_ids_count_the_step_ends_before_each_token():
    assert step_ids(STEP_END, MASK).tolist() == [[0, 0, 1, 1, 2, 2], [0, 1, 1, 1, -1, -1]]


def test_min_pooling_takes_the_lowest_token_of_each_step_and_of_the_trajectory():
    steps, mask, trajectory = pool_steps(TOKENS, torch.zeros_like(TOKENS), step_ids(STEP_END, MASK), "min")
    assert mask.tolist() == [[True, True, True], [True, True, False]]
    assert steps[0].tolist() == [1.0, -2.0, 0.5]
    assert steps[1, :2].tolist() == [2.0, -1.0]  # the padding's -50 is not the minimum
    assert trajectory.tolist() == [-2.0, -1.0]


def test_mean_pooling_is_the_mean_of_the_step_means():
    steps, _, trajectory = pool_steps(TOKENS, torch.zeros_like(TOKENS), step_ids(STEP_END, MASK), "mean")
    assert steps[0].tolist() == [2.0, 1.0, 0.5]
    assert steps[1, :2].tolist() == [2.0, 1.0]
    assert trajectory[0].item() == pytest.approx(3.5 / 3)
    assert trajectory[1].item() == pytest.approx(1.5)  # (2 + 1) / 2, not the token mean 5/4


def test_attention_pooling_with_equal_weights_is_the_token_mean():
    _, _, trajectory = pool_steps(TOKENS, torch.zeros_like(TOKENS), step_ids(STEP_END, MASK), "attention")
    assert trajectory[0].item() == pytest.approx(7.0 / 6)
    assert trajectory[1].item() == pytest.approx(5.0 / 4)


def test_attention_pooling_by_hand():
    """Row 1 with attention logits (0, ln 3, 0, 0): step 0 is token 0 alone (weight 1 → 2.0); step 1 weighs
    tokens 1..3 by 3:1:1 → (3·(−1) + 1 + 3) / 5 = 0.2; the trajectory weighs all four 1:3:1:1
    → (2 − 3 + 1 + 3) / 6."""
    attention = torch.tensor([[0.0] * 6, [0.0, math.log(3.0), 0.0, 0.0, 9.0, 9.0]])  # padding's 9 must not count
    steps, _, trajectory = pool_steps(TOKENS, attention, step_ids(STEP_END, MASK), "attention")
    assert steps[1, :2].tolist() == pytest.approx([2.0, 0.2])
    assert trajectory[1].item() == pytest.approx(3.0 / 6)


def test_the_pooled_gradient_reaches_only_real_tokens():
    x = TOKENS.clone().requires_grad_(True)
    _, _, trajectory = pool_steps(x, torch.zeros_like(x), step_ids(STEP_END, MASK), "min")
    trajectory.sum().backward()
    assert x.grad.tolist() == [[0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0]]  # the argmin of each row only


def test_an_empty_response_pools_to_zero():
    steps, mask, trajectory = pool_steps(torch.ones(1, 3), torch.zeros(1, 3),
                                         step_ids(torch.zeros(1, 3, dtype=torch.bool),
                                                  torch.zeros(1, 3, dtype=torch.bool)), "min")
    assert not mask.any() and trajectory.tolist() == [0.0]


def test_an_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="pooling"):
        pool_steps(TOKENS, TOKENS, step_ids(STEP_END, MASK), "max")


def _tokens(values: torch.Tensor):
    """The real tokens of MASK as the head hands them over: [K] values and the row of each."""
    return values[MASK], MASK.nonzero()[:, 0]


def test_token_pooling_gives_the_trajectory_by_hand():
    """min: row 0's lowest token −2, row 1's −1 (its padding's −50 is not a token); attention with logits
    (0, ln 3, 0, 0) on row 1: (2 − 3 + 1 + 3) / 6, as pool_steps' by-hand case."""
    attention = torch.tensor([[0.0] * 6, [0.0, math.log(3.0), 0.0, 0.0, 9.0, 9.0]])
    tokens, rows = _tokens(TOKENS)
    trajectory, has = pool_trajectory(tokens, _tokens(attention)[0], rows, 2, "min")
    assert trajectory.tolist() == [-2.0, -1.0] and has.tolist() == [True, True]
    trajectory, _ = pool_trajectory(tokens, _tokens(attention)[0], rows, 2, "attention")
    assert trajectory.tolist() == pytest.approx([7.0 / 6, 3.0 / 6])


@pytest.mark.parametrize("how", ["min", "attention"])
def test_token_pooling_equals_step_pooling_in_value_and_gradient(how):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, generator=g).requires_grad_(True)
    a = torch.randn(2, 6, generator=g).requires_grad_(True)
    _, _, expected = pool_steps(x, a, step_ids(STEP_END, MASK), how)
    expected.sum().backward()
    grads = x.grad.clone(), (a.grad.clone() if a.grad is not None else torch.zeros_like(a))  # min reads no attention
    x.grad, a.grad = None, None
    rows = MASK.nonzero()[:, 0]
    got, _ = pool_trajectory(x[MASK], a[MASK], rows, 2, how)
    got.sum().backward()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(x.grad, grads[0])
    torch.testing.assert_close(a.grad if a.grad is not None else torch.zeros_like(a), grads[1])


def test_token_pooling_of_an_empty_trajectory_is_zero_and_mean_is_refused():
    trajectory, has = pool_trajectory(torch.tensor([1.0, 2.0]), torch.zeros(2), torch.tensor([0, 0]), 2, "min")
    assert trajectory.tolist() == [1.0, 0.0] and has.tolist() == [True, False]
    with pytest.raises(ValueError, match="steps"):
        pool_trajectory(torch.tensor([1.0]), torch.zeros(1), torch.tensor([0]), 1, "mean")
