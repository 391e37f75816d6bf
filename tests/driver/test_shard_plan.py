"""shard_plan: which learner rank trains which sample. Every sample once, equal rows per rank, mini-batches kept
contiguous, and tokens balanced so that no rank holds the others up at FSDP's collectives."""

import random

from rlpipe.driver.clients import shard_plan


def _tokens(plan, lengths):
    return [sum(lengths[i] for i, _ in rows if i >= 0) for rows in plan]


def test_every_sample_once_equal_rows_and_padding_rows_carry_no_sample():
    lengths = [5, 9, 1, 7, 3]
    plan = shard_plan(lengths, 1, 2)
    assert [len(rows) for rows in plan] == [3, 3]
    real = sorted(i for rows in plan for i, _ in rows if i >= 0)
    assert real == [0, 1, 2, 3, 4]
    assert sum(i == -1 for rows in plan for i, _ in rows) == 1


def test_longest_first_in_snake_order_by_hand():
    # lengths sorted: 9 (1), 7 (3), 5 (0), 3 (4), 1 (2), pad -> seats 0, 1, 1, 0, 0, 1
    plan = shard_plan([5, 9, 1, 7, 3], 1, 2)
    assert [i for i, _ in plan[0]] == [1, 4, 2]
    assert [i for i, _ in plan[1]] == [3, 0, -1]


def test_mini_batches_stay_contiguous_and_each_is_split_over_all_ranks():
    lengths = list(range(12))
    plan = shard_plan(lengths, 3, 2)  # mini-batches: samples 0-3, 4-7, 8-11
    for rows in plan:
        for i, mb in rows:
            assert mb == i // 4
        assert sorted(mb for _, mb in rows) == [0, 0, 1, 1, 2, 2]


def test_tokens_are_balanced_where_a_contiguous_split_is_not():
    rng = random.Random(0)
    # 32 prompt groups of 8; a group's lengths are alike (one prompt, similar answers): contiguous halves differ
    lengths = [base + rng.randint(0, 6) for base in (rng.randint(20, 90) for _ in range(32)) for _ in range(8)]
    balanced = _tokens(shard_plan(lengths, 1, 2), lengths)
    contiguous = [sum(lengths[:128]), sum(lengths[128:])]
    assert max(balanced) - min(balanced) <= max(lengths)
    assert max(balanced) - min(balanced) < abs(contiguous[0] - contiguous[1])
