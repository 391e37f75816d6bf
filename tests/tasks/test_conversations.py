"""Supervised rows in TRL's three formats become prompt ids + response ids + a loss mask that covers exactly the
trained tokens: every assistant turn of a conversation, a completion, all of a text after its first token. The
masks are checked against the rendered text of the tokens they select, not against the code's own output."""

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from rlpipe.tasks.conversations import ChatEncoder, load_supervised
from rlpipe.tasks.datasets import BadRow, DataError

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Compute 1 + 2."},
        {"role": "assistant", "content": "3"}, {"role": "user", "content": "And 2 + 2?"},
        {"role": "assistant", "content": "4"}]


@pytest.fixture(scope="module")
def tokenizer(micro_model_dir):
    return AutoTokenizer.from_pretrained(micro_model_dir)


def _text(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=False)


def _trained(tokenizer, example):
    return _text(tokenizer, [t for t, m in zip(example.response_ids, example.response_mask) if m])


def _untrained(tokenizer, example):
    return _text(tokenizer, example.prompt_ids + [t for t, m in zip(example.response_ids, example.response_mask)
                                                  if not m])


def test_messages_train_every_assistant_turn_and_nothing_else(tokenizer):
    e = ChatEncoder(tokenizer).encode({"messages": CHAT}, "chat")
    # The template writes "<|im_start|>assistant\n{content}<|im_end|>\n": the content and the end-of-turn token
    # (what the engine generates, up to its stop token) are trained; the newline after it is never generated.
    assert _trained(tokenizer, e) == "3<|im_end|>4<|im_end|>"
    untrained = _untrained(tokenizer, e)
    assert "Be brief." in untrained and "Compute 1 + 2." in untrained and "And 2 + 2?" in untrained
    # The prompt is exactly what the rollout engines see before the first assistant turn.
    assert e.prompt_ids == tokenizer(tokenizer.apply_chat_template(CHAT[:2], add_generation_prompt=True,
                                                                   tokenize=False), add_special_tokens=False).input_ids
    assert len(e.response_mask) == len(e.response_ids) and e.response_mask[-1]


def test_prompt_completion_plain_and_conversational(tokenizer):
    enc = ChatEncoder(tokenizer)
    plain = enc.encode({"prompt": "1 + 2 =", "completion": " 3"}, "plain")
    assert _text(tokenizer, plain.prompt_ids) == "1 + 2 ="
    assert _trained(tokenizer, plain) == " 3" + tokenizer.eos_token and all(plain.response_mask)
    chat = enc.encode({"prompt": CHAT[:4], "completion": CHAT[4:]}, "chat")
    assert _trained(tokenizer, chat) == "4<|im_end|>"  # the earlier assistant turn is part of the prompt
    assert "3<|im_end|>" in _untrained(tokenizer, chat)


def test_text_trains_every_token_after_the_first(tokenizer):
    e = ChatEncoder(tokenizer).encode({"text": "hello 42"}, "text")
    assert len(e.prompt_ids) == 1 and all(e.response_mask)
    assert _text(tokenizer, e.prompt_ids + e.response_ids) == "hello 42" + tokenizer.eos_token


@pytest.mark.parametrize("special", [False, True])
def test_the_encoders_fast_path_gives_the_tokenizers_own_ids(tokenizer, special):
    # ChatEncoder calls the Rust tokenizer directly; it must agree with the tokenizer's __call__ on chat markup,
    # special tokens, spaces, digits and non-ASCII text.
    enc = ChatEncoder(tokenizer)
    assert enc._backend is not None  # the fast path is the one under test
    texts = [tokenizer.apply_chat_template(CHAT, tokenize=False), "  12 + 345 = 357\n\n", "<|im_end|>x<|im_start|>",
             "naïve café ∑ 42", "", tokenizer.eos_token * 2]
    for text in texts:
        assert enc.ids(text, special) == tokenizer(text, add_special_tokens=special)["input_ids"], text


def test_a_template_that_rewrites_earlier_turns_is_refused(micro_model_dir):
    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    # Drops every assistant turn but the last (as templates that strip past reasoning do).
    tok.chat_template = ("{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}<|im_start|>"
                         "{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(BadRow, match="turn 2"):
        ChatEncoder(tok).encode({"messages": CHAT}, "chat")


@pytest.mark.parametrize("row,reason", [
    ({"question": "q"}, "unknown_format"),
    ({"messages": []}, "bad_messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "bad_messages"),
    ({"messages": [{"role": "user", "content": "x"}]}, "no_assistant_turn"),
    ({"prompt": "x", "completion": ""}, "empty_completion"),
    ({"prompt": "x", "completion": [{"role": "assistant", "content": "y"}]}, "bad_prompt_completion"),
    ({"text": "  "}, "empty_text"),
])
def test_bad_rows_name_their_reason(tokenizer, row, reason):
    with pytest.raises(BadRow) as info:
        ChatEncoder(tokenizer).encode(row, "r")
    assert info.value.reason == reason


def _write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_a_file_mixes_formats_skips_and_quarantines_bad_rows_and_truncates(tokenizer, tmp_path):
    rows = [{"messages": CHAT}, {"prompt": "1 + 1 =", "completion": " 2"}, {"text": "hello"}, "{broken",
            {"question": "no format"}, {"id": "long", "prompt": "1 =", "completion": " 1" * 200}]
    path = _write(tmp_path / "sft.jsonl", rows)
    examples, report = load_supervised(path, tokenizer, max_tokens=64, on_bad_row="skip",
                                       quarantine=tmp_path / "q.jsonl")
    assert report.rows == 6 and report.kept == 4
    assert dict(report.skipped) == {"malformed_json": 1, "unknown_format": 1}
    assert [json.loads(line)["reason"] for line in (tmp_path / "q.jsonl").read_text().splitlines()] == [
        "malformed_json", "unknown_format"]
    long = next(e for e in examples if e.uid == "long")
    assert long.num_tokens == 64 and all(long.response_mask)  # truncated to max_tokens, TRL's max_length
    with pytest.raises(DataError, match=r"sft.jsonl, row 4: .*malformed JSON"):
        load_supervised(path, tokenizer, max_tokens=64)


def test_duplicate_ids_get_unique_uids(tokenizer, tmp_path):
    path = _write(tmp_path / "d.jsonl", [{"id": "x", "text": "a"}, {"id": "x", "text": "b"}])
    examples, _ = load_supervised(path, tokenizer, max_tokens=64)
    assert len({e.uid for e in examples}) == 2
