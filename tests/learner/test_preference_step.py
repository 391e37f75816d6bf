"""The learner's preference step: its loss is the pair loss of rlpipe.algos.preference on sequence log-probabilities
computed independently with a plain Hugging Face model (chosen and rejected paired the right way round, the
reference frozen at the initial weights), and micro-batch budgets change nothing."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import free_port
from rlpipe.algos.preference import preference_loss
from rlpipe.driver.clients import _preference_shard
from rlpipe.learner.stages import PreferenceSettings
from rlpipe.tasks.preference_pairs import PreferencePair, pair_from_group
from support import learner_rank


def _pairs(vocab: int) -> list[PreferencePair]:
    g = torch.Generator().manual_seed(7)

    def ids(lo, hi):
        return torch.randint(3, vocab, (int(torch.randint(lo, hi, (1,), generator=g)),), generator=g).tolist()

    return [PreferencePair(f"p{k}", ids(3, 8), ids(2, 9), ids(2, 9)) for k in range(6)]


def _sequence_logprob(model, prompt, response, mean):
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1: -1].float()
    lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)
    return lp.mean() if mean else lp.sum()


def _expected(model, ref, pairs, settings):
    mean = settings.loss != "dpo"
    c = torch.stack([_sequence_logprob(model, p.prompt_ids, p.chosen_ids, mean) for p in pairs])
    r = torch.stack([_sequence_logprob(model, p.prompt_ids, p.rejected_ids, mean) for p in pairs])
    rc = torch.stack([_sequence_logprob(ref, p.prompt_ids, p.chosen_ids, mean) for p in pairs])
    rr = torch.stack([_sequence_logprob(ref, p.prompt_ids, p.rejected_ids, mean) for p in pairs])
    loss, metrics = preference_loss(settings.loss, c, r, rc, rr, beta=settings.beta, gamma=settings.simpo_gamma)
    return float(loss.mean()), {k: float(v) for k, v in metrics.items()}


def _model_with(model_dir, weights):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.load_state_dict(weights, strict=False)
    return model.eval()


@pytest.mark.parametrize("loss,budget", [("dpo", None), ("dpo", 24), ("simper", 24)])
def test_preference_step_matches_the_pair_loss_on_independent_logprobs(micro_model_dir, loss, budget):
    initial = AutoModelForCausalLM.from_pretrained(micro_model_dir, dtype=torch.float32).eval()
    pairs = _pairs(initial.config.vocab_size)
    settings = PreferenceSettings(loss, beta=0.5, label_smoothing=0.0, simpo_gamma=1.0)
    rank = learner_rank(micro_model_dir, free_port(), lr=5e-2, with_reference=loss == "dpo", micro_batch_samples=4,
                        max_tokens_per_micro_batch=budget, packing="none")
    shard = _preference_shard(pairs, [(i, 0) for i in range(len(pairs))] + [(-1, 0)])  # + one padding pair
    try:
        before = rank.preference_update(shard, len(pairs), 5e-2, settings)
        expected, metrics = _expected(initial, initial, pairs, settings)
        assert before["prefer/loss"] == pytest.approx(expected, rel=1e-5, abs=1e-8)  # SimPER: a difference of ~1e-3s
        assert before["prefer/rewards_margin"] == pytest.approx(metrics["rewards/margin"], rel=1e-4, abs=1e-7)
        after = rank.preference_loss(shard, len(pairs), settings)
        trained = _model_with(micro_model_dir, rank.export_weights())
    finally:
        rank.shutdown()
    expected_after, metrics_after = _expected(trained, initial, pairs, settings)  # the reference is still the start
    assert after["prefer/loss"] == pytest.approx(expected_after, rel=1e-4, abs=1e-8)
    assert after["prefer/loss"] < before["prefer/loss"]  # the step pushed chosen over rejected
    assert after["prefer/rewards_accuracy"] == pytest.approx(metrics_after["rewards/accuracy"])


def test_pairs_from_scored_groups_follow_the_rule():
    responses = [[1] * 9, [2] * 3, [3] * 5, [4] * 7]
    # chosen = the shortest correct (3 tokens); rejected = the first wrong one
    pair, why = pair_from_group("u", [0], responses, [True, True, False, False], "wrong_or_longer", 1.5)
    assert (pair.chosen_ids, pair.rejected_ids, why) == ([2] * 3, [3] * 5, "wrong_rejected")
    # all correct: the longest (9) is >= 1.5 x 3 tokens -> a concision pair
    pair, why = pair_from_group("u", [0], responses, [True] * 4, "wrong_or_longer", 1.5)
    assert (pair.chosen_ids, pair.rejected_ids, why) == ([2] * 3, [1] * 9, "longer_rejected")
    assert pair_from_group("u", [0], responses, [True] * 4, "wrong", 1.5) == (None, "no_rejected")
    assert pair_from_group("u", [0], responses, [True] * 4, "longer", 4.0) == (None, "no_rejected")  # 9 < 4 x 3
    assert pair_from_group("u", [0], responses, [False] * 4, "wrong_or_longer", 1.5) == (None, "no_correct")
