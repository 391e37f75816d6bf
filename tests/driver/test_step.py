"""One real ``Trainer.step`` in local mode — a real learner rank (micro model, FSDP2 on a one-rank gloo group) with
the scripted engine and verifier — for what only slow runs reached before: the ledger, distinct prompt groups
across an epoch boundary of a fixed pool, and the samples' single trip to the learner."""

from __future__ import annotations

from collections import Counter

import pytest

from rlpipe.config.compose import load_config
from rlpipe.driver import build
from rlpipe.driver.collect import Collector
from rlpipe.driver.prompts import ShuffledPool
from rlpipe.driver.session import LearnerSpec, build_learner
from rlpipe.driver.trainer import Trainer
from test_collect import G, _clients, _items

pytestmark = pytest.mark.component


@pytest.mark.parametrize("learner_preset", ["fsdp2", "deepspeed"])  # each with the default packed micro-batches
def test_steps_across_an_epoch_boundary_train_distinct_groups_and_the_ledger_lists_each_sample_once(micro_model_dir,
                                                                                                    learner_preset):
    cfg = load_config(["cluster=local", f"model.path={micro_model_dir}", "data.prompts_per_step=4",
                       f"rollout.samples_per_prompt={G}", "rollout.max_response_tokens=8", f"learner={learner_preset}"])
    learner = build_learner(cfg, str(micro_model_dir), LearnerSpec.of(cfg, str(micro_model_dir)))
    rollout, verifiers = _clients()
    try:
        pool = ShuffledPool(_items(["mixed"] * 6), seed=0)  # 6 prompts, 4 per step: step 2 crosses the epoch
        collector = Collector(pool, lambda p: [1, 2, 3], rollout, verifiers, build.collect_settings(cfg))
        trainer = Trainer(collector=collector, rollout=rollout, learner=learner, settings=build.step_settings(cfg),
                          resets=build.reset_policy(cfg), engines_share_devices=False)
        seen = Counter()
        for step in (1, 2, 3):
            metrics = trainer.step(step)
            ledger = trainer.last_ledger
            prompts = Counter(s.rsplit("#", 1)[0] for s in ledger)
            assert len(ledger) == len(set(ledger)) == 4 * G, (step, ledger)
            assert len(prompts) == 4 and set(prompts.values()) == {G}, (step, prompts)
            assert metrics["rollout/num_samples"] == 4 * G and metrics["actor/grad_norm"] > 0
            seen.update(prompts)
        assert sum(seen.values()) == 12 * G and set(seen.values()) == {2 * G}  # two epochs: each prompt twice
        assert rollout.group._actors[0].obj.calls["load_weights"] == 3  # pushed after every update
    finally:
        for client in (rollout, verifiers, learner):
            client.group.shutdown()


def test_a_step_with_nothing_to_train_is_skipped_and_counted(micro_model_dir):
    cfg = load_config(["cluster=local", f"model.path={micro_model_dir}", "data.prompts_per_step=2",
                       f"rollout.samples_per_prompt={G}", "algorithm=dapo", "algorithm.overlong_buffer_tokens=0"])
    learner = build_learner(cfg, str(micro_model_dir), LearnerSpec.of(cfg, str(micro_model_dir)))
    rollout, verifiers = _clients()
    try:
        collector = Collector(ShuffledPool(_items(["same"] * 4), seed=0), lambda p: [1, 2, 3], rollout, verifiers,
                              build.collect_settings(cfg))
        trainer = Trainer(collector=collector, rollout=rollout, learner=learner, settings=build.step_settings(cfg),
                          resets=build.reset_policy(cfg), engines_share_devices=False)
        metrics = trainer.step(1)
        assert metrics["filter/skipped_step"] == 1 and metrics["rollout/num_samples"] == 0
        assert trainer.last_ledger == [] and "actor/pg_loss" not in metrics
    finally:
        for client in (rollout, verifiers, learner):
            client.group.shutdown()


def _trainer(cfg, learner, pool_patterns, rollout_and_verifiers):
    rollout, verifiers = rollout_and_verifiers
    collector = Collector(ShuffledPool(_items(pool_patterns), seed=0), lambda p: [1, 2, 3], rollout, verifiers,
                          build.collect_settings(cfg))
    return Trainer(collector=collector, rollout=rollout, learner=learner, settings=build.step_settings(cfg),
                   resets=build.reset_policy(cfg), engines_share_devices=False)


def test_asynchronous_steps_train_samples_up_to_k_versions_old_and_resume_from_the_drained_queue(micro_model_dir):
    """k = 2: step t's samples were generated before step t-2's update finished, so their staleness runs 0, 1, 2, 2,
    ...; a checkpoint's collector state (the rounds drawn ahead, drained) makes a new trainer train the same samples."""
    cfg = load_config(["cluster=local", f"model.path={micro_model_dir}", "data.prompts_per_step=2",
                       f"rollout.samples_per_prompt={G}", "trainer.max_staleness_steps=2",
                       "algorithm.rollout_correction=tis"])
    learner = build_learner(cfg, str(micro_model_dir), LearnerSpec.of(cfg, str(micro_model_dir)))
    clients = _clients()
    try:
        trainer = _trainer(cfg, learner, ["mixed"] * 20, clients)
        seen = []
        for step in (1, 2, 3, 4):
            m = trainer.step(step)
            behind = {k: v for k, v in m.items() if k.startswith("async/staleness_") and k[-1].isdigit() and v > 0}
            seen.append(behind)
            assert set(trainer.last_versions) == {max(0, step - 3)}, (step, trainer.last_versions)
            assert m["offpolicy/is_weight_mean"] > 0 and "offpolicy/mismatch_k3" in m
        assert seen == [{"async/staleness_0": 1.0}, {"async/staleness_1": 1.0}, {"async/staleness_2": 1.0},
                        {"async/staleness_2": 1.0}]
        assert sorted(trainer.collector.ahead) == [5, 6]  # in flight after step 4

        state = trainer.collector.state_dict()  # drains
        expected = {s: [c.response_ids for c in d.completions] for s, d in trainer.collector.ahead.items()}
        resumed = _trainer(cfg, learner, ["mixed"] * 20, _clients())
        resumed.collector.load_state_dict(state)
        resumed.rollout.version = trainer.rollout.version
        resumed.step(5)
        assert resumed.last_ledger == [f"{c.request_id}#{c.sample_index}" for c in state["ahead"][5][2]]
        assert [c.response_ids for c in state["ahead"][5][2]] == expected[5]
    finally:
        for client in (*clients, learner):
            client.group.shutdown()
