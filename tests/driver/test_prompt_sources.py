import json

import pytest

from rlpipe.config.schema import DataConfig
from rlpipe.driver.prompts import CurriculumPool, PromptItem, ShuffledPool, build_prompts


def _items(n):
    return [PromptItem(f"p{i}", ({"role": "user", "content": str(i)},), {"answer": str(i)}) for i in range(n)]


def test_shuffled_pool_covers_each_epoch_and_resumes_across_the_boundary():
    pool = ShuffledPool(_items(5), seed=3)
    first_epoch = pool.next_batch(5)
    assert sorted(p.uid for p in first_epoch) == [f"p{i}" for i in range(5)]
    pool.next_batch(3)  # into epoch 1
    state = pool.state_dict()
    expected = [p.uid for p in pool.next_batch(6)]  # crosses into epoch 2
    resumed = ShuffledPool(_items(5), seed=3)
    resumed.load_state_dict(state)
    assert [p.uid for p in resumed.next_batch(6)] == expected


def test_curriculum_prefers_informative_prompts_and_state_round_trips():
    pool = CurriculumPool(_items(30), seed=0, ema=1.0)
    # p0..p9 always solved, p10..p19 never solved, p20..p29 half solved
    pool.observe({f"p{i}": [True] * 4 for i in range(10)})
    pool.observe({f"p{i}": [False] * 4 for i in range(10, 20)})
    pool.observe({f"p{i}": [True, False] * 2 for i in range(20, 30)})
    state = pool.state_dict()
    picks = [p.uid for _ in range(20) for p in pool.next_batch(5)]
    informative = sum(int(u[1:]) >= 20 for u in picks) / len(picks)
    assert informative > 0.8  # weights: 0.26 vs 0.01 for solved / unsolved prompts
    resumed = CurriculumPool(_items(30), seed=99, ema=1.0)
    resumed.load_state_dict(state)
    assert [p.uid for _ in range(20) for p in resumed.next_batch(5)] == picks
    more = pool.next_batch(45)  # more than the pool: every prompt once, never twice in a batch
    assert len(more) == 30 and len({p.uid for p in more}) == 30
    assert {p.uid for p in pool.next_batch(5, exclude={f"p{i}" for i in range(28)})} == {"p28", "p29"}


def test_a_batch_across_an_epoch_boundary_holds_distinct_prompts_and_none_is_lost():
    """10 prompts, 4 per batch: the third batch crosses into epoch 1. (Before the fix it held the same prompt twice
    whenever the new epoch's shuffle put one of the old epoch's last prompts first.)"""
    for seed in range(20):
        pool = ShuffledPool(_items(10), seed=seed)
        delivered = []
        for _ in range(10):  # 40 prompts = 4 epochs
            batch = [p.uid for p in pool.next_batch(4)]
            assert len(set(batch)) == 4, (seed, batch)
            delivered += batch
        # every epoch's worth of deliveries covers the pool once: nothing lost, nothing doubled
        for epoch in range(4):
            assert sorted(delivered[10 * epoch: 10 * (epoch + 1)]) == sorted(f"p{i}" for i in range(10)), seed


def test_rounds_of_one_step_never_repeat_a_prompt():
    """Dynamic sampling draws several rounds for one step: later rounds exclude the step's prompts; a pool with
    nothing left for the step gives fewer (the step's shortfall is counted)."""
    pool = ShuffledPool(_items(6), seed=1)
    first = {p.uid for p in pool.next_batch(4)}
    second = {p.uid for p in pool.next_batch(4, exclude=first)}
    assert len(second) == 2 and not first & second
    assert pool.next_batch(4, exclude=first | second) == []
    state = pool.state_dict()  # the cursor after skipping round-trips
    follow = [p.uid for p in pool.next_batch(6)]
    resumed = ShuffledPool(_items(6), seed=1)
    resumed.load_state_dict(state)
    assert [p.uid for p in resumed.next_batch(6)] == follow and len(set(follow)) == 6


def test_pass_rate_table_window_keeps_the_right_prompts(tmp_path):
    data = DataConfig(pool_size=20, heldout_size=16)
    source, _ = build_prompts(data)
    uids = [p.uid for p in source.items]
    table = tmp_path / "rates.jsonl"
    rows = [{"_meta": {"model_path": "m"}}] + [{"uid": u, "pass_rate": i / 19} for i, u in enumerate(uids)]
    table.write_text("\n".join(json.dumps(r) for r in rows))
    source, _ = build_prompts(DataConfig(pool_size=20, heldout_size=16, pass_rate_table=str(table),
                                         pass_rate_min=0.01, pass_rate_max=0.99))
    assert [p.uid for p in source.items] == uids[1:-1]  # never-solved and always-solved dropped
    with pytest.raises(ValueError, match="not in"):
        build_prompts(DataConfig(pool_size=25, heldout_size=16, pass_rate_table=str(table)))
