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
    assert len(pool.next_batch(45)) == 45  # more than the pool: drawn again


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
