"""Preference losses against values derived by hand (rlpipe.algos.preference)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rlpipe.algos.preference import (PREFERENCE_LOSSES, dpo_loss, ipo_loss, sequence_logprobs, simper_loss,
                                     simpo_loss)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_sequence_logprobs_sum_or_mean_over_the_masked_tokens():
    lp = t(-1.0, -2.0, -3.0).repeat(2, 1)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.float64)
    assert sequence_logprobs(lp, mask, mean=False).tolist() == [-3.0, 0.0]
    assert sequence_logprobs(lp, mask, mean=True).tolist() == [-1.5, 0.0]  # an empty row: 0, not nan


def test_dpo_by_hand():
    # log-ratios: chosen -10 - (-12) = 2, rejected -20 - (-17) = -3, h = 5; beta 0.1: -log sigmoid(0.5) = log(1 + e^-0.5)
    loss, metrics = dpo_loss(t(-10.0), t(-20.0), t(-12.0), t(-17.0), beta=0.1)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.5)), abs=1e-12)  # 0.474077
    assert metrics["rewards/chosen"].item() == pytest.approx(0.2)
    assert metrics["rewards/rejected"].item() == pytest.approx(-0.3)
    assert metrics["rewards/margin"].item() == pytest.approx(0.5) and metrics["rewards/accuracy"].item() == 1.0
    # h = 0: log 2 whatever beta; label smoothing 0.25 at h = 5, beta 0.1: 0.75 log(1+e^-0.5) + 0.25 log(1+e^0.5)
    assert dpo_loss(t(-1.0), t(-1.0), t(-1.0), t(-1.0), beta=3.0)[0].item() == pytest.approx(math.log(2))
    smoothed = dpo_loss(t(-10.0), t(-20.0), t(-12.0), t(-17.0), beta=0.1, label_smoothing=0.25)[0].item()
    assert smoothed == pytest.approx(0.75 * math.log(1 + math.exp(-0.5)) + 0.25 * math.log(1 + math.exp(0.5)))


def test_dpo_gradient_by_hand():
    # dL/d logpi(y_w) = -beta * sigmoid(-beta h) and dL/d logpi(y_l) = +beta * sigmoid(-beta h); h = 5, beta = 0.1
    chosen, rejected = t(-10.0).requires_grad_(), t(-20.0).requires_grad_()
    dpo_loss(chosen, rejected, t(-12.0), t(-17.0), beta=0.1)[0].sum().backward()
    s = 1 / (1 + math.exp(0.5))
    assert chosen.grad.item() == pytest.approx(-0.1 * s) and rejected.grad.item() == pytest.approx(0.1 * s)


def test_dpo_equals_trls_sigmoid_formula_on_the_same_logprobs():
    # TRL 1.16 DPOTrainer._compute_loss, loss_type="sigmoid", f_divergence_type="reverse_kl": chosen_logratios =
    # chosen_logps - ref_chosen_logps (token sums), delta_score = chosen - rejected logratios,
    # per_sequence_loss = -F.logsigmoid(beta * delta_score). The same expression, on random log-probabilities:
    g = torch.Generator().manual_seed(0)
    c, r, rc, rr = (-50 * torch.rand(64, generator=g, dtype=torch.float64) for _ in range(4))
    trl = -F.logsigmoid(0.1 * ((c - rc) - (r - rr)))
    torch.testing.assert_close(dpo_loss(c, r, rc, rr, beta=0.1)[0], trl, rtol=0, atol=1e-12)


def test_ipo_by_hand():
    # mean log-ratios 2 and -1: h = 3; beta 0.5: (3 - 1/(2 * 0.5))^2 = (3 - 1)^2 = 4; the minimum sits at h = 1/(2 beta)
    assert ipo_loss(t(-1.0), t(-3.0), t(-3.0), t(-2.0), beta=0.5)[0].item() == pytest.approx(4.0)
    assert ipo_loss(t(0.0), t(-1.0), t(0.0), t(0.0), beta=0.5)[0].item() == pytest.approx(0.0)
    with pytest.raises(ValueError):
        ipo_loss(t(0.0), t(0.0), t(0.0), t(0.0), label_smoothing=0.1)


def test_simpo_by_hand():
    # beta 2, gamma 1, mean logprobs -1 and -2: 2 * 1 - 1 = 1 -> -log sigmoid(1) = log(1 + e^-1) = 0.313262
    loss, metrics = simpo_loss(t(-1.0), t(-2.0), beta=2.0, gamma=1.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1.0)))
    assert metrics["rewards/margin"].item() == pytest.approx(2.0)


def test_simper_by_hand():
    # mean logprobs log 0.5 and log 0.25: inverse perplexities 0.5 and 0.25; loss = -0.5 + 0.25 = -0.25
    chosen, rejected = t(math.log(0.5)).requires_grad_(), t(math.log(0.25)).requires_grad_()
    loss, metrics = simper_loss(chosen, rejected)
    assert loss.item() == pytest.approx(-0.25)
    loss.sum().backward()
    # d/d mean logpi(y_w) of -exp(.) = -0.5; of +exp(.) for y_l = +0.25: the gradient is bounded by 1 (no blow-up)
    assert chosen.grad.item() == pytest.approx(-0.5) and rejected.grad.item() == pytest.approx(0.25)
    assert metrics["rewards/chosen"].item() == pytest.approx(0.5)


def test_every_loss_is_registered():
    assert set(PREFERENCE_LOSSES.names()) == {"dpo", "ipo", "simpo", "simper"}


def test_preference_loss_dispatches_with_what_each_loss_takes():
    from rlpipe.algos.preference import preference_loss

    c, r, rc, rr = torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]), torch.tensor([-4.0])
    # DPO: h = (−3 + 4) − (−5 + 4) = 2; β = 0.5 -> −log σ(1)
    assert float(preference_loss("dpo", c, r, rc, rr, beta=0.5)[0]) == pytest.approx(math.log1p(math.exp(-1.0)))
    # SimPER ignores β and the reference: −e^{−3} + e^{−5}
    assert float(preference_loss("simper", c, r, beta=9.0)[0]) == pytest.approx(-math.exp(-3) + math.exp(-5))
    # SimPO: −log σ(β (−3 + 5) − γ) with β = 2, γ = 1 -> −log σ(3)
    assert float(preference_loss("simpo", c, r, beta=2.0, gamma=1.0)[0]) == pytest.approx(math.log1p(math.exp(-3.0)))
    with pytest.raises(ValueError, match="reference"):
        preference_loss("ipo", c, r)
