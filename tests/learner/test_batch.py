import pytest
import torch

from rlpipe.learner.batch import (build_batch, capped_cost, count_token_budget_groups, pad_to_multiple, padded_cost,
                                  padded_tokens, split_by_tokens, split_even, summed_cost)


def test_layout_aligns_responses_at_column_p():
    batch = build_batch(
        prompt_ids=[[5, 6, 7], [8]],
        response_ids=[[1, 2], [3, 4, 9]],
        rollout_logprobs=[[-0.1, -0.2], [-0.3, -0.4, -0.5]],
        pad_id=0,
    )
    assert batch.prompt_len == 3
    assert batch.input_ids.tolist() == [[5, 6, 7, 1, 2, 0], [0, 0, 8, 3, 4, 9]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    # Positions count real tokens only, as the rollout engine saw them (left padding does not shift them).
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4, 4], [0, 0, 0, 1, 2, 3]]
    assert batch.response_mask.tolist() == [[True, True, False], [True, True, True]]
    assert torch.allclose(batch.rollout_logprobs, torch.tensor([[-0.1, -0.2, 0.0], [-0.3, -0.4, -0.5]]))


def test_padding_rows_carry_no_tokens_and_shards_are_equal():
    batch = build_batch([[1], [2], [3]], [[4], [5, 6], [7]], [[0.0], [0.0, 0.0], [0.0]], pad_id=0)
    padded = pad_to_multiple(batch, 2)
    assert padded.num_samples == 4
    assert padded.response_mask[3].sum() == 0
    assert padded.response_mask.sum() == batch.response_mask.sum()
    shards = split_even(padded, 2)
    assert [s.num_samples for s in shards] == [2, 2]


def test_padded_tokens_count_rows_times_longest_prompt_plus_longest_response():
    # rows (prompt, response): (2, 3), (4, 1) -> 2 rows x (4 + 3) = 14, though only 10 tokens are real.
    assert padded_tokens([2, 4], [3, 1]) == 14
    assert padded_tokens([3], [0]) == 4  # an empty response still has its one column
    assert padded_tokens([], []) == 0


def test_token_budget_groups_stay_under_the_budget_and_a_long_row_stands_alone():
    prompts, responses = [2, 2, 2, 2, 2], [1, 1, 2, 3, 20]  # totals 3 3 4 5 22, sorted
    # budget 10: [3, 3] = 2 x 3 = 6; adding the 4-token row makes 3 x 4 = 12 > 10, so it starts a group; [4, 5] would
    # be 2 x 5 = 10 <= 10; the 22-token row is over the budget alone.
    assert count_token_budget_groups(5, padded_cost(prompts, responses), 10) == 3
    assert count_token_budget_groups(5, padded_cost(prompts, responses), 1000) == 1
    assert count_token_budget_groups(0, padded_cost([], []), 10) == 0


def test_split_by_tokens_gives_exactly_the_count_asked_with_the_smallest_greedy_maximum():
    prompts, responses = [2] * 6, [1, 1, 1, 1, 4, 8]  # totals 3 3 3 3 6 10
    groups = split_by_tokens(6, padded_cost(prompts, responses), 3)
    assert [list(g) for g in groups] == [[0, 1, 2, 3], [4], [5]]  # costs 12, 6, 10: no cut has a maximum below 12
    # 4 groups: the smallest greedy budget is 10 (row 5 alone costs 10): [0-2] = 9, [3] = 3, [4] = 6, [5] = 10.
    assert [list(g) for g in split_by_tokens(6, padded_cost(prompts, responses), 4)] == [[0, 1, 2], [3], [4], [5]]
    # More groups than any budget's greedy cut gives (4 at budget 10): the costliest groups of two or more rows are
    # halved, [0-2] into [0] and [1, 2], then [1, 2] into [1] and [2].
    assert [list(g) for g in split_by_tokens(6, padded_cost(prompts, responses), 6)] == [[0], [1], [2], [3], [4], [5]]
    assert split_by_tokens(6, padded_cost(prompts, responses), 1) == [range(0, 6)]
    with pytest.raises(ValueError):
        split_by_tokens(6, padded_cost(prompts, responses), 7)


def test_packed_units_cost_the_sum_of_their_tokens():
    cost = summed_cost([3, 5, 8, 20])
    assert cost(0, 3) == 16 and cost(1, 2) == 5 and cost(0, 0) == 0
    # budget 16: [3, 5, 8] = 16 fits exactly; 20 alone. Two groups asked: the same cut. Three: no budget can go below
    # 20 (the last item alone), whose greedy cut is two groups, so the costlier one of several items is halved.
    assert count_token_budget_groups(4, cost, 16) == 2
    assert [list(g) for g in split_by_tokens(4, cost, 2)] == [[0, 1, 2], [3]]
    assert [list(g) for g in split_by_tokens(4, cost, 3)] == [[0], [1, 2], [3]]


def test_a_sample_cap_holds_next_to_the_token_budget():
    cost = capped_cost(summed_cost([1, 1, 1, 1, 1, 1]), [1, 1, 1, 1, 1, 1], max_samples=2)
    # 6 one-token samples fit a budget of 100 at once, but at most 2 per micro-batch: 3 micro-batches of 2.
    assert count_token_budget_groups(6, cost, 100) == 3
    assert [list(g) for g in split_by_tokens(6, cost, 3)] == [[0, 1], [2, 3], [4, 5]]
