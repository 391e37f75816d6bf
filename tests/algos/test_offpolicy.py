"""Off-policy corrections, checked against values worked out by hand."""

import math

import pytest
import torch

from rlpipe.algos.offpolicy import mismatch_k3, rollout_correction

LN2, LN3 = math.log(2.0), math.log(3.0)
# Two responses: three tokens and two tokens (the last column of row 1 is padding).
MASK = torch.tensor([[True, True, True], [True, True, False]])
BEHAVIOUR = torch.tensor([[-1.0, -2.0, -1.0], [-1.0, -1.0, 0.0]])
# proximal − behaviour log-ratios: row 0: ln 3, 0, −ln 2 (ρ = 3, 1, 0.5); row 1: ln 2, −ln 3 (ρ = 2, 1/3)
PROXIMAL = BEHAVIOUR + torch.tensor([[LN3, 0.0, -LN2], [LN2, -LN3, 5.0]]) * MASK


def _close(a, b):
    torch.testing.assert_close(a, torch.tensor(b), rtol=1e-5, atol=1e-6)


def test_none_is_plain_ppo():
    c = rollout_correction("none", PROXIMAL, BEHAVIOUR, MASK, threshold=2.0)
    _close(c.weights, [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    assert torch.equal(c.keep_mask, MASK) and not c.limited.any()


def test_token_tis_truncates_at_the_threshold_and_keeps_every_token():
    c = rollout_correction("tis", PROXIMAL, BEHAVIOUR, MASK, threshold=2.0)
    _close(c.weights, [[2.0, 1.0, 0.5], [2.0, 1 / 3, 0.0]])  # ρ = 3 truncated to 2; ρ = 2 is at, not over
    assert torch.equal(c.keep_mask, MASK)
    assert c.limited.tolist() == [[True, False, False], [False, False, False]]


def test_sequence_tis_weighs_every_token_of_a_response_by_the_product_of_its_ratios():
    c = rollout_correction("tis", PROXIMAL, BEHAVIOUR, MASK, threshold=2.0, level="sequence")
    # row 0: 3 · 1 · 0.5 = 1.5 (under 2); row 1: 2 · 1/3 = 2/3
    _close(c.weights, [[1.5, 1.5, 1.5], [2 / 3, 2 / 3, 0.0]])
    c = rollout_correction("tis", PROXIMAL, BEHAVIOUR, MASK, threshold=1.2, level="sequence")
    _close(c.weights, [[1.2, 1.2, 1.2], [2 / 3, 2 / 3, 0.0]])
    assert c.limited.tolist() == [[True, True, True], [False, False, False]]


def test_token_mis_drops_tokens_outside_the_band():
    c = rollout_correction("mis", PROXIMAL, BEHAVIOUR, MASK, threshold=2.0)
    # band [0.5, 2]: ρ = 3 out, 1 in, 0.5 in (edge); 2 in (edge), 1/3 out
    assert c.keep_mask.tolist() == [[False, True, True], [True, False, False]]
    _close(c.weights, [[0.0, 1.0, 0.5], [2.0, 0.0, 0.0]])
    assert c.limited.tolist() == [[True, False, False], [False, True, False]]


def test_sequence_mis_drops_whole_responses():
    c = rollout_correction("mis", PROXIMAL, BEHAVIOUR, MASK, threshold=1.4, level="sequence")
    # row 0: ρ_seq = 1.5 > 1.4 -> out; row 1: 2/3 ≥ 1/1.4 = 0.714? no: 0.667 < 0.714 -> out
    assert not c.keep_mask.any()
    c = rollout_correction("mis", PROXIMAL, BEHAVIOUR, MASK, threshold=1.6, level="sequence")
    # 1/1.6 = 0.625: both in
    assert torch.equal(c.keep_mask, MASK)
    _close(c.weights, [[1.5, 1.5, 1.5], [2 / 3, 2 / 3, 0.0]])


def test_decoupled_caps_from_above_only():
    c = rollout_correction("decoupled", PROXIMAL, BEHAVIOUR, MASK, threshold=2.0)
    assert c.keep_mask.tolist() == [[False, True, True], [True, True, False]]  # only ρ = 3 > 2 goes
    _close(c.weights, [[0.0, 1.0, 0.5], [2.0, 1 / 3, 0.0]])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown rollout correction"):
        rollout_correction("is", PROXIMAL, BEHAVIOUR, MASK, threshold=2.0)
    with pytest.raises(ValueError, match="> 1"):
        rollout_correction("tis", PROXIMAL, BEHAVIOUR, MASK, threshold=1.0)


def test_mismatch_k3_by_hand_and_nonnegative():
    k3 = mismatch_k3(PROXIMAL, BEHAVIOUR, MASK)
    # r = 3: 3 − 1 − ln 3; r = 1: 0; r = 0.5: 0.5 − 1 + ln 2; r = 2: 1 − ln 2; r = 1/3: 1/3 − 1 + ln 3
    _close(k3, [[2 - LN3, 0.0, -0.5 + LN2], [1 - LN2, -2 / 3 + LN3, 0.0]])
    assert (mismatch_k3(torch.randn(40, 9), torch.randn(40, 9), torch.ones(40, 9, dtype=torch.bool)) >= 0).all()
    assert float(mismatch_k3(BEHAVIOUR, BEHAVIOUR, MASK).abs().max()) == 0.0
