import torch

from rlpipe.learner.batch import build_batch, pad_to_multiple, split_even


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
