"""Supervised warm-start of the tiny model on teacher traces, cached on disk.

The cache key is a hash of every input that changes the result: the settings, ``VERSION`` (bumped when this code
changes behaviour), and what makes the same settings give other floats — torch's CPU kernel ISA (AVX-512 vs AVX2
kernels give a completely different model after 1,500 steps: one rounding difference grows about 10x every 10
steps) and the torch / transformers versions. A cache copied to another kind of machine is therefore rebuilt
there, not silently reused. The model is written to a temporary directory and renamed into place, so an
interrupted run never leaves a half-written cache entry. The second run with the same settings returns at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)
VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("RLPIPE_CACHE", Path.home() / ".cache" / "rlpipe")) / "warmstart"


def numerics() -> dict[str, str]:
    """What besides the settings decides the warm-started weights bit for bit (measured: docs/default-job.md)."""
    from importlib.metadata import version  # transformers' version without importing it (a second of start-up)

    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "transformers": version("transformers")}


def warmstart(
    *,
    size: str = "tiny",
    steps: int = 1500,
    lr: float = 3e-3,
    batch_size: int = 32,
    seed: int = 0,
    slip_rate: float = 0.6,
    cache_dir: Optional[str] = None,
    think_tokens: bool = False,
    task: str = "arithmetic",
    tool_rate: float = 0.3,
    bad_call_rate: float = 0.2,
) -> Path:
    """Build + supervise the tiny model (or return the cached result). Returns the HF model directory.
    ``think_tokens``: the tokenizer has ``<think>`` / ``</think>`` (tasks with modes). ``task="tool_arithmetic"``:
    the teacher of rlpipe.tasks.tool_arithmetic, calling the calculator on ``tool_rate`` of its traces and writing
    ``bad_call_rate`` of its calls in a form the calculator refuses."""
    settings = dict(size=size, steps=steps, lr=lr, batch_size=batch_size, seed=seed, slip_rate=slip_rate,
                    version=VERSION, **numerics())
    if think_tokens:  # only then part of the key: the caches of models without them stay valid
        settings["think_tokens"] = True
    if task != "arithmetic":  # likewise
        settings.update(task=task, tool_rate=tool_rate, bad_call_rate=bad_call_rate)
        settings.pop("slip_rate")
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    target = root / f"{size}-{key}"
    if (target / "warmstart.json").exists():
        log.info("warm-start: cached model %s", target)
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.time()
    from rlpipe.models.tiny import build_tiny_model

    build_tiny_model(tmp, seed=seed, size=size, think_tokens=think_tokens, task=task)
    # warmstart_steps=0: the randomly initialised model as it is (the generation-heavy benchmark uses one).
    final_loss = (_supervise(tmp, steps=steps, lr=lr, batch_size=batch_size, seed=seed, slip_rate=slip_rate,
                             task=task, tool_rate=tool_rate, bad_call_rate=bad_call_rate)
                  if steps > 0 else float("nan"))
    (tmp / "warmstart.json").write_text(json.dumps(
        {**settings, "final_loss": final_loss, "seconds": round(time.time() - start, 1)}, indent=2))
    try:
        tmp.rename(target)
    except OSError:  # another process finished the same warm-start first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("warm-start: trained %d steps in %.0f s (final loss %.3f) -> %s", steps, time.time() - start,
             final_loss, target)
    return target


def _supervise(model_dir: Path, *, steps: int, lr: float, batch_size: int, seed: int, slip_rate: float,
               task: str = "arithmetic", tool_rate: float = 0.0, bad_call_rate: float = 0.0) -> float:
    """Next-token loss on the assistant tokens of teacher traces; AdamW, linear warm-up then cosine decay."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlpipe.tasks.arithmetic import heldout_set, make_problem, teacher_solution, to_messages

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))  # nothing else runs yet: use the cores
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    rng = random.Random(seed)
    eos = tokenizer.eos_token
    if task == "tool_arithmetic":
        next_row = _tool_rows(tokenizer, rng, tool_rate, bad_call_rate)
    else:
        excluded = {p.question for p in heldout_set()}

        def next_row():
            while True:
                p = make_problem(rng, "sft")
                if p.question not in excluded:
                    break
            prompt = tokenizer.apply_chat_template(to_messages(p), add_generation_prompt=True, tokenize=False)
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            answer_ids = tokenizer(teacher_solution(p, slip_rate, rng) + eos, add_special_tokens=False)["input_ids"]
            return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids

    loss_value, t0 = float("nan"), time.time()
    for step in range(steps):
        input_rows, label_rows = [], []
        while len(input_rows) < batch_size:
            inputs, labels = next_row()
            input_rows.append(inputs)
            label_rows.append(labels)
        width = max(len(r) for r in input_rows)
        input_ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in input_rows])
        labels = torch.tensor([r + [-100] * (width - len(r)) for r in label_rows])
        attention_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in input_rows])
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()
        if step % 100 == 0 or step == steps - 1:
            log.info("warm-start step %d/%d loss %.3f (%.0f s)", step + 1, steps, loss_value, time.time() - t0)
    model.save_pretrained(model_dir)
    torch.set_num_threads(threads)
    return loss_value


def _tool_rows(tokenizer, rng: random.Random, tool_rate: float, bad_call_rate: float):
    """(input ids, labels) of tool_arithmetic teacher conversations: only the assistant turns are labelled, the tool's
    answer is context (rlpipe.tasks.conversations.ChatEncoder, as ``rlpipe sft`` encodes them)."""
    from rlpipe.tasks.conversations import ChatEncoder
    from rlpipe.tasks.tool_arithmetic import heldout_set, make_problem, teacher_row

    encoder, excluded = ChatEncoder(tokenizer), {p.question for p in heldout_set()}

    def next_row():
        while True:
            p = make_problem(rng, "sft")
            if p.question not in excluded:
                break
        example = encoder.encode(teacher_row(p, tool_rate, rng, bad_call_rate), p.uid)
        labels = [t if m else -100 for t, m in zip(example.response_ids, example.response_mask)]
        return example.prompt_ids + example.response_ids, [-100] * len(example.prompt_ids) + labels

    return next_row
