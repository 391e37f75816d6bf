"""Preference rows without a ``prompt`` (TRL's implicit prompt, Anthropic HH-RLHF's layout) are split at the longest
common prefix and encode to the same pair as the explicit row; rows that cannot be split are one-line bad rows."""

import pytest
from transformers import AutoTokenizer

from rlpipe.tasks.conversations import ChatEncoder
from rlpipe.tasks.datasets import BadRow
from rlpipe.tasks.preference_pairs import encode_pair, split_implicit_prompt

USER = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Compute 1 + 2."},
        {"role": "assistant", "content": "3"}, {"role": "user", "content": "And 2 + 2?"}]


@pytest.fixture(scope="module")
def encoder(micro_model_dir):
    return ChatEncoder(AutoTokenizer.from_pretrained(micro_model_dir))


def test_a_conversation_splits_after_its_shared_turns_and_encodes_like_the_explicit_row(encoder):
    good, bad = {"role": "assistant", "content": "4"}, {"role": "assistant", "content": "5"}
    implicit = {"chosen": USER + [good], "rejected": USER + [bad]}
    # The earlier assistant turn is shared, so it belongs to the prompt, not to either side.
    assert split_implicit_prompt(implicit) == {"prompt": USER, "chosen": [good], "rejected": [bad]}
    explicit = {"prompt": USER, "chosen": [good], "rejected": [bad]}
    assert encode_pair(encoder, implicit, "u", 512) == encode_pair(encoder, explicit, "u", 512)


def test_a_text_splits_at_its_common_prefix_with_the_space_kept_on_the_completions(encoder):
    implicit = {"chosen": "Human: 2 + 2?\n\nAssistant: 4", "rejected": "Human: 2 + 2?\n\nAssistant: 5, I think"}
    split = split_implicit_prompt(implicit)
    assert split == {"prompt": "Human: 2 + 2?\n\nAssistant:", "chosen": " 4", "rejected": " 5, I think"}
    assert encode_pair(encoder, implicit, "u", 512) == encode_pair(encoder, split, "u", 512)
    # Differing inside a word: the prompt ends mid-word, as TRL's extract_prompt leaves it.
    assert split_implicit_prompt({"chosen": "It is 14", "rejected": "It is 15"})["prompt"] == "It is 1"


def test_a_row_with_a_prompt_is_left_alone():
    row = {"prompt": "Q", "chosen": "Q a", "rejected": "Q b"}
    assert split_implicit_prompt(row) is row


@pytest.mark.parametrize("row, reason", [
    ({"chosen": "4", "rejected": "5"}, "no_common_prompt"),                        # nothing shared
    ({"chosen": "Q: 4", "rejected": "Q: 4"}, "no_common_prompt"),                  # the same text twice
    ({"chosen": "Q: 4", "rejected": "Q: 45"}, "no_common_prompt"),                 # one side empty after the split
    ({"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"}],
      "rejected": [{"role": "user", "content": "b"}, {"role": "assistant", "content": "y"}]}, "no_common_prompt"),
    ({"chosen": USER, "rejected": USER[:2] + [{"role": "user", "content": "z"}]}, "no_common_prompt"),  # user turn
    ({"chosen": "Q: 4", "rejected": [{"role": "assistant", "content": "5"}]}, "missing_field"),
])
def test_rows_that_cannot_be_split_are_bad_rows_with_a_reason(row, reason):
    with pytest.raises(BadRow) as err:
        split_implicit_prompt(row)
    assert err.value.reason == reason
