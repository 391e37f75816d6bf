import math

import pytest
import torch

from rlpipe.algos.length_shaping import (
    adaptive_length_penalty,
    budget_reward_exact,
    budget_reward_max,
    difficulty_bin,
    group_length_penalty,
    mean_tokens_by_bin,
)

# ---- Kimi k1.5 group length penalty ----


def test_all_correct_group_hand_values():
    # min 10, max 30, span 20: λ = 0.5 - (10-10)/20, 0.5 - (20-10)/20, 0.5 - (30-10)/20 = 0.5, 0, -0.5
    out = group_length_penalty(torch.tensor([10, 20, 30]), torch.tensor([True, True, True]), torch.tensor([0, 0, 0]))
    torch.testing.assert_close(out, torch.tensor([0.5, 0.0, -0.5]))


def test_incorrect_samples_never_get_a_bonus():
    # same lengths, λ = 0.5, 0, -0.5; incorrect ones get min(0, λ): sample 0 -> 0, sample 2 keeps -0.5
    out = group_length_penalty(torch.tensor([10, 20, 30]), torch.tensor([False, True, False]), torch.tensor([0, 0, 0]))
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, -0.5]))


def test_min_and_max_span_correct_and_incorrect_samples():
    # lengths 0 (wrong), 40 (right), 100 (wrong): span 100 over all three, so the correct one gets 0.5 - 40/100 = 0.1
    # (it would get 0.5 if min/max were taken over correct samples only)
    out = group_length_penalty(
        torch.tensor([0.0, 40.0, 100.0]), torch.tensor([False, True, False]), torch.tensor([5, 5, 5]))
    torch.testing.assert_close(out, torch.tensor([0.0, 0.1, -0.5]))


def test_equal_lengths_give_no_signal():
    out = group_length_penalty(torch.tensor([7, 7, 7]), torch.tensor([True, False, True]), torch.tensor([2, 2, 2]))
    torch.testing.assert_close(out, torch.zeros(3))
    assert not torch.isnan(out).any()


def test_singleton_group_gets_zero():
    out = group_length_penalty(torch.tensor([123]), torch.tensor([True]), torch.tensor([0]))
    torch.testing.assert_close(out, torch.zeros(1))


def test_interleaved_unsorted_groups_match_separate_computation():
    # group 9: lengths 10, 30, 20 -> span 20 -> λ = 0.5, -0.5, 0 (all correct)
    # group 4: lengths 100, 200    -> span 100 -> λ = 0.5, -0.5; the first is wrong -> min(0, 0.5) = 0
    lengths = torch.tensor([10, 100, 30, 200, 20])
    correct = torch.tensor([True, False, True, True, True])
    groups = torch.tensor([9, 4, 9, 4, 9])
    expected = torch.tensor([0.5, 0.0, -0.5, -0.5, 0.0])
    torch.testing.assert_close(group_length_penalty(lengths, correct, groups), expected)
    # and each group on its own gives its slice of that
    g9, g4 = groups == 9, groups == 4
    torch.testing.assert_close(group_length_penalty(lengths[g9], correct[g9], groups[g9]), expected[g9])
    torch.testing.assert_close(group_length_penalty(lengths[g4], correct[g4], groups[g4]), expected[g4])


def test_weight_scales():
    # λ = 0.5, 0, -0.5 times 0.2
    out = group_length_penalty(torch.tensor([10, 20, 30]), torch.ones(3, dtype=torch.bool), torch.zeros(3).long(), 0.2)
    torch.testing.assert_close(out, torch.tensor([0.1, 0.0, -0.1]))


def test_empty_batch():
    out = group_length_penalty(torch.zeros(0), torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.long))
    assert out.shape == (0,)


# ---- ALP adaptive length penalty ----


def test_alp_scales_the_per_token_cost_by_the_solve_rate():
    # Group 7 (3 samples, 2 correct): solve rate 2/3; group 1 (2 samples, both correct): 1; max_tokens 100, weight 0.3.
    # -0.3 * 2/3 * [30, 60, 90] / 100 = [-0.06, -0.12, -0.18]; -0.3 * 1 * [50, 10] / 100 = [-0.15, -0.03].
    out = adaptive_length_penalty(torch.tensor([30, 50, 60, 10, 90]), torch.tensor([True, True, False, True, True]),
                                  torch.tensor([7, 1, 7, 1, 7]), max_tokens=100, weight=0.3)
    torch.testing.assert_close(out, torch.tensor([-0.06, -0.15, -0.12, -0.03, -0.18]))


def test_alp_never_solved_prompts_pay_one_over_k():
    # No sample correct: the floor 1/K = 1/4 applies; -1 * 1/4 * [8, 16, 0, 4] / 16 = [-0.125, -0.25, 0, -0.0625].
    out = adaptive_length_penalty(torch.tensor([8, 16, 0, 4]), torch.zeros(4, dtype=torch.bool), torch.zeros(4).long(),
                                  max_tokens=16)
    torch.testing.assert_close(out, torch.tensor([-0.125, -0.25, 0.0, -0.0625]))


def test_alp_refuses_a_non_positive_normaliser():
    with pytest.raises(ValueError, match="max_tokens"):
        adaptive_length_penalty(torch.tensor([1]), torch.tensor([True]), torch.tensor([0]), max_tokens=0)


# ---- L1 LCPO budget rewards ----


def test_budget_exact_hand_values():
    # default α = 0.0003:
    #   correct, 1000 vs budget 1000 -> 1 - 0             = 1.0
    #   correct, 1500 vs budget 1000 -> 1 - 0.0003 * 500  = 0.85
    #   correct,  500 vs budget 1000 -> 1 - 0.0003 * 500  = 0.85 (under- and overshoot cost the same)
    #   wrong,   3000 vs budget 1000 -> 0 - 0.0003 * 2000 = -0.6
    lengths = torch.tensor([1000, 1500, 500, 3000])
    correct = torch.tensor([True, True, True, False])
    budget = torch.tensor([1000, 1000, 1000, 1000])
    torch.testing.assert_close(budget_reward_exact(lengths, correct, budget), torch.tensor([1.0, 0.85, 0.85, -0.6]))
    # α = 0.001: correct, |2000 - 1500| = 500 -> 1 - 0.5 = 0.5
    out = budget_reward_exact(torch.tensor([1500]), torch.tensor([True]), torch.tensor([2000]), alpha=0.001)
    torch.testing.assert_close(out, torch.tensor([0.5]))


def test_budget_max_hand_values_and_clipping():
    # defaults α = 0.0003, δ = 0.5: r = 1[correct] * clip(0.0003 * (budget - n) + 0.5, 0, 1)
    #   on budget (1000, 1000):          0 + 0.5         = 0.5
    #   500 under (500, 1000):           0.15 + 0.5      = 0.65
    #   far under (0, 4000):             1.2 + 0.5 = 1.7 -> clipped to 1
    #   1000 over (2000, 1000):          -0.3 + 0.5      = 0.2
    #   far over (5000, 1000):           -1.2 + 0.5      -> clipped to 0
    #   wrong, under budget (500, 1000): 0 * 0.65        = 0
    lengths = torch.tensor([1000, 500, 0, 2000, 5000, 500])
    budget = torch.tensor([1000, 1000, 4000, 1000, 1000, 1000])
    correct = torch.tensor([True, True, True, True, True, False])
    expected = torch.tensor([0.5, 0.65, 1.0, 0.2, 0.0, 0.0])
    torch.testing.assert_close(budget_reward_max(lengths, correct, budget), expected)


def test_budget_max_custom_alpha_delta():
    # α = 0.01, δ = 0.1: correct, 20 under budget -> 0.2 + 0.1 = 0.3
    out = budget_reward_max(torch.tensor([80]), torch.tensor([True]), torch.tensor([100]), alpha=0.01, delta=0.1)
    torch.testing.assert_close(out, torch.tensor([0.3]))


# ---- overthinking metric ----


def test_difficulty_bin_interior_and_edge_values():
    # edges [0.25, 0.75] -> bins (-inf, 0.25] = 0 (hardest), (0.25, 0.75] = 1, (0.75, inf) = 2 (easiest);
    # a pass rate equal to an edge lands in the lower (harder) bin
    pass_rate = torch.tensor([0.0, 0.25, 0.3, 0.75, 0.76, 1.0])
    torch.testing.assert_close(difficulty_bin(pass_rate, [0.25, 0.75]), torch.tensor([0, 0, 1, 1, 2, 2]))


def test_difficulty_bin_zero_edge_isolates_unsolved():
    # edges [0.0, 1.0): 0.0 -> bin 0 (never solved); (0, 1) -> bin 1; 1.0 equals the last edge -> bin 1 too
    pass_rate = torch.tensor([0.0, 0.1, 0.9, 1.0])
    torch.testing.assert_close(difficulty_bin(pass_rate, [0.0, 1.0]), torch.tensor([0, 1, 1, 1]))


def test_difficulty_bin_rejects_unsorted_edges():
    with pytest.raises(ValueError):
        difficulty_bin(torch.tensor([0.5]), [0.5, 0.25])


def test_mean_tokens_by_bin_with_empty_bin():
    # bin 0: (100 + 300) / 2 = 200; bin 1: empty; bin 2: 50 / 1 = 50; bin 3: (10 + 20 + 30) / 3 = 20
    lengths = torch.tensor([100, 50, 300, 10, 20, 30])
    bins = torch.tensor([0, 2, 0, 3, 3, 3])
    mean, count = mean_tokens_by_bin(lengths, bins, num_bins=4)
    torch.testing.assert_close(count, torch.tensor([2, 0, 1, 3]))
    assert math.isnan(float(mean[1]))
    torch.testing.assert_close(mean[[0, 2, 3]], torch.tensor([200.0, 50.0, 20.0]))


def test_mean_tokens_by_bin_rejects_out_of_range_bins():
    with pytest.raises(ValueError):
        mean_tokens_by_bin(torch.tensor([1, 2]), torch.tensor([0, 3]), num_bins=3)


def test_bins_feed_the_metric():
    # pass rates 0.1, 0.9, 0.2, 1.0 with edge 0.5 -> bins 0, 1, 0, 1;
    # hard bin mean (4000 + 6000) / 2 = 5000, easy bin mean (3000 + 1000) / 2 = 2000
    bins = difficulty_bin(torch.tensor([0.1, 0.9, 0.2, 1.0]), [0.5])
    mean, count = mean_tokens_by_bin(torch.tensor([4000, 3000, 6000, 1000]), bins, num_bins=2)
    torch.testing.assert_close(mean, torch.tensor([5000.0, 2000.0]))
    torch.testing.assert_close(count, torch.tensor([2, 2]))
