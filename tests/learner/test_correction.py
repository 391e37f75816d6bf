"""The off-policy correction inside a learner rank: weights from the engine's and the learner's own logprobs, masked
tokens out of the loss and out of its counts, and no change at all when the engine is the learner."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import free_port
from rlpipe.learner.rank import CorrectionSettings
from support import counts, learner_rank, shard

pytestmark = pytest.mark.component
PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12]]
RESPONSES = [[20, 21, 22, 23], [24, 25], [26, 27, 28]]
ADVANTAGES = torch.tensor([1.0, -0.5, 0.25])


def _rank(micro_model_dir, mode, threshold=2.0):
    return learner_rank(micro_model_dir, free_port(), with_reference=False, lr=1e-2,
                        correction=CorrectionSettings(mode, threshold, "token"))


def test_correction_weights_masks_and_counts(micro_model_dir):
    rank = _rank(micro_model_dir, "mis")
    try:
        exact = rank.response_logprobs(shard(PROMPTS, RESPONSES))  # the learner's own logprobs, flat
        # The engine's logprobs: equal to the learner's except token 0 of sample 0 (ρ = e^2 > 2: masked) and token 1
        # of sample 2 (ρ = e^-0.5 ≈ 0.61: kept, weight 0.61).
        behaviour = exact.clone()
        behaviour[0] -= 2.0
        behaviour[len(RESPONSES[0]) + len(RESPONSES[1]) + 1] += 0.5
        rows = behaviour.split([len(r) for r in RESPONSES])
        prepared = rank.prepare(shard(PROMPTS, RESPONSES, [r.tolist() for r in rows]))
        assert prepared["trained_tokens"].tolist() == [3, 2, 3]  # one token of sample 0 left out
        assert prepared["is_limited"].tolist() == [1, 0, 0]
        torch.testing.assert_close(prepared["is_weight_sum"], torch.tensor([3.0, 2.0, 2.0 + math.exp(-0.5)]),
                                   rtol=1e-4, atol=1e-5)
        metrics = rank.update(ADVANTAGES, [counts([[0] * 3, [0] * 2, [0] * 3], 1)])
        assert math.isfinite(metrics["actor/pg_loss"]) and metrics["offpolicy/mismatch_k3"] >= 0
    finally:
        rank.shutdown()


@pytest.mark.parametrize("mode", ["tis", "mis", "decoupled"])
def test_no_mismatch_means_no_change(micro_model_dir, mode):
    """With the engine's logprobs equal to the learner's, every mode trains exactly like no correction."""
    results = {}
    for m in ("none", mode):
        rank = _rank(micro_model_dir, m)
        try:
            exact = rank.response_logprobs(shard(PROMPTS, RESPONSES))
            logprobs = [r.tolist() for r in exact.split([len(r) for r in RESPONSES])]
            rank.prepare(shard(PROMPTS, RESPONSES, logprobs))
            results[m] = rank.update(ADVANTAGES, [counts(RESPONSES, 1)])
        finally:
            rank.shutdown()
    for key in ("actor/pg_loss", "actor/grad_norm"):
        assert results[mode][key] == pytest.approx(results["none"][key], rel=1e-5, abs=1e-7), key
