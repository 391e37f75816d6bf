"""A tiny Qwen2-architecture model and a byte-level BPE tokenizer, both built offline.

Same architecture class and files as a real Qwen2 checkpoint (``config.json``, ``model.safetensors``,
``tokenizer.json`` with a ChatML template), so transformers, vLLM, FSDP2 and DeepSpeed take their real code paths.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterable

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# ChatML. ``enable_thinking`` (the Qwen3 / EXAONE 4.0 switch, rlpipe.tasks.modes) opens the thought in the generation
# prompt, as EXAONE 4.0 does; without the argument (a task without modes) nothing changes.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking %}<think>\n{% endif %}{% endif %}"
)
# Added (not special) tokens, as in Qwen3: one id each, and kept when a response is decoded, so verifiers see them.
THINK_TOKENS = ["<think>", "</think>"]
# The tool-call tags, added the same way (as in Qwen2.5 / Qwen3), for tasks with tools (rlpipe.agents.tool_call).
TOOL_CALL_TOKENS = ["<tool_call>", "</tool_call>"]
TASKS = ("arithmetic", "tool_arithmetic")

SIZES = {
    # ~0.9M parameters: learns the default task in about two minutes on 2 CPU cores.
    "tiny": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2),
    "small": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2),
    # ~17M parameters: the generation-heavy benchmark (bench/peers/), where decoding, not per-step overhead, dominates.
    "medium": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=6, num_attention_heads=8,
                   num_key_value_heads=2),
    # For tests: builds in a second; same architecture. (vLLM's CPU attention needs head_dim >= 32.)
    "micro": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1),
}


def tokenizer_corpus(seed: int, n: int = 3000) -> list[str]:
    from rlpipe.tasks.arithmetic import correct_solution, make_problem

    rng = random.Random(seed)
    texts = []
    for i in range(n):
        p = make_problem(rng, f"tok-{i}")
        texts.append(f"<|im_start|>user\n{p.question}<|im_end|>\n<|im_start|>assistant\n{correct_solution(p)}<|im_end|>")
    return texts


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 512, think_tokens: bool = False,
                    tool_tokens: bool = False):
    """Byte-level BPE; digits are always single tokens (so arithmetic is done digit by digit, not memorised)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   model_max_length=2048)
    fast.chat_template = CHAT_TEMPLATE
    if think_tokens:
        fast.add_tokens(THINK_TOKENS)
    if tool_tokens:
        fast.add_tokens(TOOL_CALL_TOKENS)
    return fast


def build_tiny_model(out_dir: str | Path, *, seed: int = 0, size: str = "tiny", vocab_size: int = 512,
                     think_tokens: bool = False, task: str = "arithmetic") -> Path:
    """Write a randomly initialised tiny Qwen2 model + tokenizer to ``out_dir``; returns the path. ``think_tokens``
    adds ``<think>`` / ``</think>`` (tasks with modes); ``task="tool_arithmetic"`` trains the tokenizer on tool-call
    conversations too and adds the tool-call tags. Without them the default job's model is unchanged."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    if size not in SIZES:
        raise ValueError(f"unknown tiny model size {size!r}; valid: {', '.join(SIZES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if task not in TASKS:
        raise ValueError(f"unknown tiny model task {task!r}; valid: {', '.join(TASKS)}")
    corpus = tokenizer_corpus(seed)
    if task == "tool_arithmetic":
        from rlpipe.tasks.tool_arithmetic import tokenizer_texts

        corpus += tokenizer_texts(seed)
    tokenizer = train_tokenizer(corpus, vocab_size, think_tokens, tool_tokens=task == "tool_arithmetic")
    tokenizer.save_pretrained(out)
    eos, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=pad,
        rope_theta=10000.0,
        **SIZES[size],
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=eos)
    model.save_pretrained(out)
    return out
