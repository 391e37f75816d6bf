import pytest
import torch

from rlpipe.algos.advantages import ADVANTAGE_ESTIMATORS, compute_advantages, group_stats

R = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0])
G = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])


def test_grpo_hand_values():
    # group 0: mean 0.5, unbiased std = sqrt(4 * 0.25 / 3) = 0.5774 -> ±0.5/0.5774 = ±0.8660
    # group 1: mean 0.75, std = sqrt((3 * 0.0625 + 0.5625) / 3) = 0.5 -> +0.5, -1.5
    expected = torch.tensor([0.8660, -0.8660, -0.8660, 0.8660, 0.5, 0.5, 0.5, -1.5])
    torch.testing.assert_close(compute_advantages("grpo", R, G), expected, atol=1e-4, rtol=0)


def test_dr_grpo_is_mean_centred_without_std():
    expected = torch.tensor([0.5, -0.5, -0.5, 0.5, 0.25, 0.25, 0.25, -0.75])
    torch.testing.assert_close(compute_advantages("dr_grpo", R, G), expected)


def test_rloo_hand_values():
    # group 0, sample 0: 1 - mean(0, 0, 1) = 2/3; sample 1: 0 - mean(1, 0, 1) = -2/3
    # group 1, sample 4: 1 - mean(1, 1, 0) = 1/3; sample 7: 0 - 1 = -1
    expected = torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, 1 / 3, 1 / 3, 1 / 3, -1.0])
    torch.testing.assert_close(compute_advantages("rloo", R, G), expected)


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_group_relative_estimators_sum_to_zero_per_group(name):
    rewards = torch.rand(12)
    groups = torch.tensor([3, 3, 3, 7, 7, 7, 7, 7, 1, 1, 9, 9])  # unequal sizes, arbitrary ids
    adv = compute_advantages(name, rewards, groups)
    for g in groups.unique():
        assert abs(float(adv[groups == g].sum())) < 1e-5


def test_singleton_and_constant_groups_get_zero():
    rewards = torch.tensor([1.0, 0.5, 0.5, 0.5])
    groups = torch.tensor([0, 1, 1, 1])
    for name in ("grpo", "dr_grpo", "rloo"):
        assert torch.all(compute_advantages(name, rewards, groups) == 0), name


def test_reinforce_pp_whitens_globally():
    adv = compute_advantages("reinforce_pp", R, G)
    # rewards have 5 ones and 3 zeros: mean 0.625, unbiased std = sqrt(8 * 0.625 * 0.375 / 7) = 0.5175
    torch.testing.assert_close(adv[0], torch.tensor((1 - 0.625) / 0.517549), atol=1e-4, rtol=0)
    assert abs(float(adv.mean())) < 1e-6 and abs(float(adv.std()) - 1) < 1e-4


def test_agapo_equals_reinforce_pp_baseline_for_equal_group_sizes():
    # LOO = G/(G-1) * (r - group mean): a constant factor that global whitening removes.
    rewards = torch.rand(16)
    groups = torch.arange(4).repeat_interleave(4)
    torch.testing.assert_close(compute_advantages("agapo", rewards, groups),
                               compute_advantages("reinforce_pp_baseline", rewards, groups), atol=1e-5, rtol=0)


def test_agapo_all_wrong_groups_kept_and_knob_gives_negative_signal():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])  # group 1: all wrong
    plain = compute_advantages("agapo", rewards, groups)
    # LOO: [1, -0.5, -0.5, 0, 0, 0]; mean 0; whitening keeps the all-wrong group at exactly 0.
    assert torch.all(plain[3:] == 0)
    knob = compute_advantages("agapo", rewards, groups, all_wrong_advantage=0.5)
    # LOO with knob: [1, -0.5, -0.5, -0.5, -0.5, -0.5]; mean -1/6 -> the all-wrong group is below the batch mean.
    assert torch.all(knob[3:] < 0)
    a_loo = torch.tensor([1.0, -0.5, -0.5, -0.5, -0.5, -0.5])
    torch.testing.assert_close(knob, (a_loo - a_loo.mean()) / (a_loo.std() + 1e-6))


def test_group_stats_and_registry_error():
    mean, std, size = group_stats(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0, 0, 2]))
    assert mean.tolist() == [2.0, 2.0, 5.0] and size.tolist() == [2.0, 2.0, 1.0]
    assert std[0] == pytest.approx(2 ** 0.5) and std[2] == 0
    with pytest.raises(KeyError, match="valid names: .*grpo"):
        ADVANTAGE_ESTIMATORS.get("gpro")
