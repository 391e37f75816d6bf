import math

import pytest
import torch

from rlpipe.algos.aggregation import aggregate_loss
from rlpipe.algos.entropy import entropy_from_logits
from rlpipe.algos.kl import kl_estimate, kl_in_reward, kl_loss, sequence_kl
from rlpipe.algos.policy_loss import compute_policy_loss
from rlpipe.algos.shaping import overlong_penalty, truncated_mask, zero_variance_group_mask


def _ratios(*ratios):
    """logprobs/old_logprobs [1, k] giving the requested ratios."""
    logprobs = torch.log(torch.tensor([ratios]))
    return logprobs, torch.zeros_like(logprobs), torch.ones_like(logprobs, dtype=torch.bool)


def test_ppo_clip_hand_values_positive_and_negative_advantage():
    lp, old, mask = _ratios(0.5, 1.1, 1.5)
    loss, m = compute_policy_loss("ppo_clip", lp, old, torch.tensor([2.0]), mask, clip_low=0.2, clip_high=0.28)
    # A=2: -min(ρA, clip(ρ)A): ρ=0.5 -> -min(1.0, 1.6) = -1.0; ρ=1.1 -> -2.2; ρ=1.5 -> -min(3.0, 2.56) = -2.56
    torch.testing.assert_close(loss, torch.tensor([[-1.0, -2.2, -2.56]]))
    assert float(m["clipfrac"]) == pytest.approx(1 / 3)
    loss, m = compute_policy_loss("ppo_clip", lp, old, torch.tensor([-1.0]), mask, clip_low=0.2, clip_high=0.28)
    # A=-1: max(-ρA, -clip(ρ)A) = max(ρ, clip(ρ)): 0.5 -> 0.8 (clipped); 1.1 -> 1.1; 1.5 -> 1.5
    torch.testing.assert_close(loss, torch.tensor([[0.8, 1.1, 1.5]]))
    assert float(m["clipfrac"]) == pytest.approx(1 / 3)


def test_dual_clip_caps_negative_advantage_loss():
    lp, old, mask = _ratios(5.0)
    loss, _ = compute_policy_loss("ppo_clip", lp, old, torch.tensor([-1.0]), mask, dual_clip=3.0)
    assert float(loss) == pytest.approx(3.0)  # min(max(5, 1.2), 3 * 1)


def test_masked_tokens_give_zero_loss():
    lp = torch.randn(2, 3)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    for name in ("ppo_clip", "pg", "gspo"):
        loss, _ = compute_policy_loss(name, lp, lp.detach() + 0.1, torch.tensor([1.0, -1.0]), mask)
        assert torch.all(loss[~mask] == 0), name


def test_pg_gradient_at_ratio_one_is_reinforce():
    logprobs = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, _ = compute_policy_loss("pg", logprobs, logprobs.detach(), torch.tensor([3.0]), torch.ones(1, 2, dtype=torch.bool))
    loss.sum().backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-3.0, -3.0]]))  # -A per token


def test_gspo_ratio_is_the_geometric_mean_of_token_ratios():
    lp, old, mask = _ratios(1.0001, 1.0003)
    _, m = compute_policy_loss("gspo", lp, old, torch.tensor([1.0]), mask, clip_low=1.0, clip_high=1.0)
    assert float(m["ratio_mean"]) == pytest.approx(math.sqrt(1.0001 * 1.0003), rel=1e-6)


def test_aggregation_hand_values():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    assert float(aggregate_loss(loss, mask, "token_mean")) == pytest.approx(10 / 4)
    assert float(aggregate_loss(loss, mask, "seq_mean_token_mean")) == pytest.approx((2 + 4) / 2)
    assert float(aggregate_loss(loss, mask, "seq_mean_token_sum_norm", constant=8)) == pytest.approx((6 / 8 + 4 / 8) / 2)


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_micro_batches_and_ranks_reproduce_the_whole_batch_gradient(mode):
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 5)
    x = torch.randn(6, 5, 4)
    mask = torch.rand(6, 5) > 0.3
    mask[:, 0] = True
    adv = torch.randn(6)
    old = torch.randn(6, 5) * 0.1 - 1.5

    def loss_of(rows, **counts):
        logprobs = torch.log_softmax(layer(x[rows]), dim=-1)[..., 0]
        per_token, _ = compute_policy_loss("ppo_clip", logprobs, old[rows], adv[rows], mask[rows])
        return aggregate_loss(per_token, mask[rows], mode, constant=5.0, **counts)

    def grad(fn):
        layer.zero_grad()
        fn().backward()
        return layer.weight.grad.clone()

    whole = grad(lambda: loss_of(slice(0, 6)))
    counts = dict(num_global_tokens=int(mask.sum()), num_global_seqs=6)
    # three micro-batches on one rank: sum of parts
    micro = grad(lambda: sum(loss_of(slice(i, i + 2), **counts) for i in (0, 2, 4)))
    torch.testing.assert_close(micro, whole)
    # two ranks (dp_size=2), each averaging gradients like FSDP: mean over ranks
    rank_grads = [grad(lambda r=r: loss_of(slice(3 * r, 3 * r + 3), dp_size=2, **counts)) for r in (0, 1)]
    torch.testing.assert_close((rank_grads[0] + rank_grads[1]) / 2, whole)


def test_kl_estimators_hand_values():
    lp, ref = torch.tensor([[-1.0]]), torch.tensor([[-2.0]])  # log r = ref - lp = -1
    assert float(kl_estimate(lp, ref, "k1")) == pytest.approx(1.0)
    assert float(kl_estimate(lp, ref, "k2")) == pytest.approx(0.5)
    assert float(kl_estimate(lp, ref, "k3")) == pytest.approx(math.exp(-1) - 1 + 1)
    same = torch.randn(3, 4)
    assert torch.all(kl_estimate(same, same, "k3") == 0)
    assert torch.all(kl_estimate(torch.randn(50, 7), torch.randn(50, 7), "k3") >= 0)
    assert float(kl_estimate(torch.tensor([[0.0]]), torch.tensor([[-100.0]]), "k1")) == 10.0  # clamped


def test_kl_levels_and_in_reward():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    assert float(kl_loss(kl, mask, "token")) == pytest.approx(1.0 / 4)
    assert float(kl_loss(kl, mask, "sequence")) == pytest.approx((0.6 + 0.4) / 2)  # AGAPO: per-sequence sums
    seq = sequence_kl(kl, mask)
    torch.testing.assert_close(seq, torch.tensor([0.6, 0.4]))
    torch.testing.assert_close(kl_in_reward(torch.tensor([1.0, 0.0]), seq, 0.5), torch.tensor([0.7, -0.2]))
    torch.testing.assert_close(kl_in_reward(torch.tensor([1.0, 0.0]), seq, 0.0), torch.tensor([1.0, 0.0]))


def test_entropy_uniform_and_peaked():
    uniform = torch.zeros(1, 1, 8)
    assert float(entropy_from_logits(uniform)) == pytest.approx(math.log(8))
    assert float(entropy_from_logits(torch.tensor([[[100.0, 0.0, 0.0]]]))) == pytest.approx(0.0, abs=1e-6)


def test_overlong_penalty_breakpoints():
    lengths = torch.tensor([10, 12, 14, 16, 17])
    # max 16, buffer 4: flat until 12, then (12 - L)/4, -1 beyond 16
    torch.testing.assert_close(overlong_penalty(lengths, 16, 4), torch.tensor([0.0, 0.0, -0.5, -1.0, -1.0]))


def test_filters():
    keep = zero_variance_group_mask(torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0]), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert keep.tolist() == [False, False, True, True, False, False]
    assert truncated_mask(torch.tensor([True, False])).tolist() == [False, True]
