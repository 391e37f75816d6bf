import logging

import torch

from rlpipe.models.warmstart import warmstart


def test_tokenizer_digits_are_single_tokens_and_chat_template(micro_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    ids = tok("123 + 45", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]).strip() for i in ids if tok.decode([i]).strip().isdigit()] == list("12345")
    text = tok.apply_chat_template([{"role": "user", "content": "Compute 1 + 2."}], add_generation_prompt=True,
                                   tokenize=False)
    assert text == "<|im_start|>user\nCompute 1 + 2.<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def test_model_loads_with_transformers_as_qwen2_with_tied_embeddings(micro_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(micro_model_dir)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    out = model(torch.tensor([[1, 2, 3]]))
    assert out.logits.shape[-1] == model.config.vocab_size


def test_warmstart_is_cached_and_the_second_call_skips_training(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="rlpipe.models.warmstart")
    first = warmstart(size="micro", steps=3, batch_size=4, cache_dir=str(tmp_path))
    assert "trained 3 steps" in caplog.text
    caplog.clear()
    second = warmstart(size="micro", steps=3, batch_size=4, cache_dir=str(tmp_path))
    assert second == first and "cached model" in caplog.text and "trained" not in caplog.text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]  # no half-written entries left
    assert warmstart(size="micro", steps=4, batch_size=4, cache_dir=str(tmp_path)) != first  # settings change the key


def test_zero_warmstart_steps_give_the_random_model(tmp_path):
    """model.tiny.warmstart_steps=0 is documented as random init: it must build (it divided by zero before)."""
    from rlpipe.models.warmstart import warmstart

    path = warmstart(size="micro", steps=0, cache_dir=str(tmp_path))
    assert (path / "model.safetensors").exists() and (path / "warmstart.json").exists()
    assert warmstart(size="micro", steps=0, cache_dir=str(tmp_path)) == path  # cached
