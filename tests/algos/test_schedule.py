"""The SFT / preference stages' learning rate, against values worked out by hand."""

import math

import pytest

from rlpipe.algos.schedule import warmup_cosine_lr


def test_warmup_then_cosine_to_the_floor():
    # 100 steps, warm-up ratio 0.1 -> W = 10; floor 0.1; peak 1.
    lr = [warmup_cosine_lr(s, 100, 1.0, 0.1, 0.1) for s in range(101)]
    assert lr[0] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(0))))  # 1/10 of the way up: 0.1
    assert lr[4] == pytest.approx(0.5 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.04))))
    assert lr[50] == pytest.approx(0.1 + 0.9 * 0.5)  # half way down the cosine: 0.55
    assert lr[100] == pytest.approx(0.1)  # the floor
    assert all(a >= b for a, b in zip(lr[9:], lr[10:]))  # never rises after the warm-up


def test_no_warmup_ratio_still_starts_at_the_peak_and_scales_with_it():
    assert warmup_cosine_lr(0, 10, 3e-3, 0.0, 0.0) == pytest.approx(3e-3)
    assert warmup_cosine_lr(5, 10, 3e-3, 0.0, 0.0) == pytest.approx(1.5e-3)
