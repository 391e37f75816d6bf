"""The driver's collection plumbing in seconds: local mode, a scripted engine and verifier (their behaviour is a
function of the prompt, so the expected groups are known), the real Collector, clients and ActorGroups."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from rlpipe.driver.actors import ActorGroup
from rlpipe.driver.clients import RolloutClient, VerifierClient
from rlpipe.driver.collect import CollectSettings, Collector, Rollouts
from rlpipe.driver.prompts import PromptItem, ShuffledPool
from rlpipe.rollout.types import SamplingSettings
from scripted_roles import ScriptedEngine, ScriptedVerifier

G = 4


def _items(patterns):
    return [PromptItem(f"q{i}", ({"role": "user", "content": f"q{i}"},), {"pattern": p})
            for i, p in enumerate(patterns)]


def _clients(fail_first_generate=False, max_retries=2):
    engines = ActorGroup("rollout", "local", 1, restartable=True)
    engines.construct("scripted_roles:ScriptedEngine", [{"fail_first_generate": fail_first_generate}])
    verifiers = ActorGroup("verifier", "local", 1, restartable=True)
    verifiers.construct("rlpipe.verify.batch_scorer:BatchVerifier", [{"name": "scripted_roles:ScriptedVerifier",
                                                                       "options": {}}])
    rollout = RolloutClient(engines)
    rollout.started()
    return rollout, VerifierClient(verifiers, max_retries)


def _collector(patterns, *, prompts_per_step, dynamic=True, rounds=4, ahead=0, length_penalty=0.0,
               length_reward="kimi", budget_reward="none", budget=None, **clients):
    rollout, verifiers = _clients(**clients)
    settings = CollectSettings(prompts_per_step=prompts_per_step, samples_per_prompt=G,
                               sampling=SamplingSettings.unforced(1.0, 1.0, 8), seed=0, dynamic_sampling=dynamic,
                               max_generation_rounds=rounds, overlong_buffer_tokens=0, overlong_penalty=1.0,
                               max_staleness_steps=ahead, length_penalty=length_reward,
                               length_penalty_weight=length_penalty,
                               budget_reward=budget_reward, budget_reward_alpha=0.1, budget_reward_delta=0.5)
    items = _items(patterns)
    if budget is not None:
        items = [PromptItem(p.uid, p.messages, {**p.gold, "budget_tokens": budget}) for p in items]
    return Collector(ShuffledPool(items, seed=0), lambda p: [1, 2, 3], rollout, verifiers, settings)


def test_dynamic_sampling_refills_with_new_prompts_until_enough_informative_groups():
    collector = _collector(["mixed", "same"] * 6, prompts_per_step=4)
    m: dict = {}
    rollouts = collector.collect(step=1, m=m)
    uids = [p.uid for p in rollouts.prompts]
    assert len(uids) == 4 and len(set(uids)) == 4  # four distinct informative groups
    assert all(p.gold["pattern"] == "mixed" for p in rollouts.prompts)
    assert len(rollouts.completions) == 4 * G and m["filter/shortfall"] == 0
    assert m["filter/rounds"] >= 2 and m["filter/zero_var_frac"] > 0
    assert set(rollouts.group_index.tolist()) == {0, 1, 2, 3}


def test_shortfall_is_counted_when_the_pool_runs_out_of_informative_prompts():
    collector = _collector(["mixed", "same", "same", "same", "mixed", "same"], prompts_per_step=4)
    m: dict = {}
    rollouts = collector.collect(step=1, m=m)
    assert len(rollouts.prompts) == 2 and m["filter/shortfall"] == 2
    # the rounds stopped when the pool had nothing left that the step did not already hold: no prompt twice
    assert len({p.uid for p in rollouts.prompts}) == 2 and m["filter/rounds"] == 2


def test_without_dynamic_sampling_every_group_is_kept():
    collector = _collector(["mixed", "same"] * 2, prompts_per_step=4, dynamic=False)
    m: dict = {}
    rollouts = collector.collect(step=1, m=m)
    assert len(rollouts.prompts) == 4 and m["filter/rounds"] == 1 and m["filter/zero_var_frac"] == 0.5


def test_verifier_timeouts_are_retried_and_errors_dropped_never_scored():
    ScriptedVerifier.seen.clear()
    collector = _collector(["flaky", "broken"], prompts_per_step=2, dynamic=False)
    m: dict = {}
    rollouts = collector.collect(step=1, m=m)
    assert m["verify/retried"] == 1 + 2  # the flaky sample once; the broken one on both retries
    assert m["verify/dropped"] == 1 and m["verify/timeout_frac"] == pytest.approx(1 / 8)
    assert len(rollouts.completions) == 2 * G - 1  # the broken sample is out of the batch, not a 0 reward
    broken = [p.uid for p in rollouts.prompts if p.gold["pattern"] == "broken"][0]
    assert f"{broken}#0" not in rollouts.ledger()
    flaky = [c for c in rollouts.completions if c.text.endswith("|0") and c.request_id != broken][0]
    assert rollouts.rewards[rollouts.completions.index(flaky)] == 1.0  # scored on its retry


def test_a_fatal_engine_error_in_local_mode_rebuilds_the_engine_and_requeues_without_ending_the_driver():
    ScriptedEngine.fatal_raised = False
    collector = _collector(["mixed"] * 4, prompts_per_step=2, dynamic=False, fail_first_generate=True)
    m: dict = {}
    rollouts = collector.collect(step=1, m=m)  # would have called os._exit before: the driver would be gone
    assert ScriptedEngine.fatal_raised
    assert collector.rollout.faults["rollout_restarts"] == 1 and collector.rollout.faults["rollout_requeued"] == 2
    assert Counter(rollouts.ledger()).most_common(1)[0][1] == 1 and len(rollouts.completions) == 2 * G


def test_select_groups_and_concat_renumber_groups_and_keep_samples_aligned():
    def part(uids, rewards):
        prompts = [PromptItem(u, (), {}) for u in uids]
        from rlpipe.rollout.types import Completion, GenerationRequest

        group = torch.tensor([i for i in range(len(uids)) for _ in range(2)])
        completions = [Completion(uids[g], k, [g], [0.0], "stop", f"{uids[g]}|{k}") for g, k in
                       zip(group.tolist(), [0, 1] * len(uids))]
        requests = [GenerationRequest(u, (1,), 2, 0) for u in uids]
        return Rollouts(prompts, requests, completions, torch.tensor(rewards), torch.tensor(rewards) > 0, group,
                        torch.zeros(len(completions), dtype=torch.bool))

    a = part(["a", "b", "c"], [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]).select_groups([2, 0])
    assert [p.uid for p in a.prompts] == ["c", "a"] and a.group_index.tolist() == [1, 1, 0, 0]
    assert [c.request_id for c in a.completions] == ["a", "a", "c", "c"] and a.rewards.tolist() == [1, 0, 1, 1]
    both = Rollouts.concat([a, part(["d"], [0.0, 1.0])])
    assert [p.uid for p in both.prompts] == ["c", "a", "d"] and both.group_index.tolist() == [1, 1, 0, 0, 2, 2]
    assert both.ledger() == ["a#0", "a#1", "c#0", "c#1", "d#0", "d#1"]
    assert [both.prompts[g].uid for g in both.group_index.tolist()] == [c.request_id for c in both.completions]


def test_a_step_whose_groups_are_all_filtered_is_empty_not_an_error():
    collector = _collector(["same"] * 6, prompts_per_step=2, rounds=2)
    m: dict = {}
    rollouts = collector.collect(step=1, m=m)
    assert not rollouts.completions and m["filter/shortfall"] == 2 and m["filter/rounds"] == 2


def test_the_length_penalty_is_added_to_the_rewards_group_by_group():
    """Kimi k1.5's length reward in the real collection path. The scripted engine's sample k has 1 + k % 3 tokens
    (lengths 1, 2, 3, 1), samples 0 and 2 are correct: λ = 0.5 - (L - 1) / (3 - 1) = [0.5, 0, -0.5, 0.5]; correct
    samples get 0.5 λ, wrong ones 0.5 min(0, λ): rewards [1 + 0.25, 0, 1 - 0.25, 0]."""
    rollouts = _collector(["mixed"] * 2, prompts_per_step=2, dynamic=False, length_penalty=0.5).collect(step=1, m={})
    assert rollouts.rewards.tolist() == [1.25, 0.0, 0.75, 0.0] * 2


def test_the_adaptive_length_penalty_scales_with_the_groups_solve_rate():
    """ALP in the real collection path: lengths 1, 2, 3, 1 of at most 8 tokens, samples 0 and 2 correct, so the solve
    rate is 1/2 (above 1/K = 1/4): penalty = -0.5 * 1/2 * L / 8 = -L / 32 = [-1/32, -2/32, -3/32, -1/32]."""
    rollouts = _collector(["mixed"], prompts_per_step=1, dynamic=False, length_penalty=0.5,
                          length_reward="alp").collect(step=1, m={})
    assert rollouts.rewards.tolist() == pytest.approx([1 - 1 / 32, -2 / 32, 1 - 3 / 32, -1 / 32])


def test_the_budget_reward_replaces_the_verifiers_for_prompts_that_state_a_budget():
    """L1 with a stated budget of 2 tokens, alpha 0.1. Lengths 1, 2, 3, 1; samples 0 and 2 correct.
    exact: 1[correct] - 0.1 |2 - L| = [0.9, 0, 0.9, -0.1]; max: 1[correct] clip(0.1 (2 - L) + 0.5, 0, 1) =
    [0.6, 0, 0.4, 0]."""
    exact = _collector(["mixed"], prompts_per_step=1, dynamic=False, budget_reward="exact", budget=2).collect(1, {})
    assert exact.rewards.tolist() == pytest.approx([0.9, 0.0, 0.9, -0.1])
    top = _collector(["mixed"], prompts_per_step=1, dynamic=False, budget_reward="max", budget=2).collect(1, {})
    assert top.rewards.tolist() == pytest.approx([0.6, 0.0, 0.4, 0.0])
