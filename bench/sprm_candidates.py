"""Shared by the score-head diagnostics (bench/sprm_probe.py, bench/sprm_finetune.py): candidates sampled once from
a trained policy and cached, their true per-step labels, learner-shaped batches of them, and the report line."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from rlpipe.algos.metrics import auroc, best_of_n, within_question_auroc
from rlpipe.algos.sprm import step_end_mask
from rlpipe.tasks.arithmetic import TrainStream, heldout_set

STEP = re.compile(r"(\d+) ([+-]) (\d+) = (\d+)")
TEST_SAMPLES = 16


def step_truth(text: str) -> list[bool]:
    """Per worked step: is ``a op b = c`` right on its own (a slip is local; later steps continue from it)."""
    return [(int(a) + int(b) if op == "+" else int(a) - int(b)) == int(c) for a, op, b, c in STEP.findall(text)]


def _sample(model_path: str, questions, n: int, seed: int):
    from rlpipe.rollout.types import GenerationRequest, SamplingSettings
    from rlpipe.rollout.vllm_engine import VLLMEngine

    eng = VLLMEngine(model_path, seed=seed)
    tok = eng.tokenizer
    reqs = []
    for i, q in enumerate(questions):
        text = tok.apply_chat_template([{"role": "user", "content": q.question}], tokenize=False,
                                       add_generation_prompt=True)
        reqs.append(GenerationRequest(q.uid, tuple(tok(text, add_special_tokens=False).input_ids), n,
                                      seed * 100_000 + i))
    completions = eng.generate(reqs, SamplingSettings.unforced(temperature=1.0, top_p=1.0, max_response_tokens=64))
    prompt = {r.request_id: list(r.prompt_ids) for r in reqs}
    gold = {q.uid: q.answer for q in questions}
    return [dict(prompt=prompt[c.request_id], resp=c.response_ids, text=c.text,
                 correct=f"\\boxed{{{gold[c.request_id]}}}" in c.text, truth=step_truth(c.text),
                 logprobs=torch.tensor(c.logprobs)) for c in completions], tok.pad_token_id


def candidates(model_path: str, cache: str):
    """(train items: 1024 training-stream questions x 8, test items: the 256 held-out questions x TEST_SAMPLES,
    pad id), sampled at T=1 by vLLM and cached in ``cache``. Test items are grouped by question."""
    if Path(cache).exists():
        saved = torch.load(cache, weights_only=False)
        if saved["model"] != str(Path(model_path).resolve()):
            raise SystemExit(f"{cache} holds candidates of {saved['model']}, not of {model_path}: pass another --cache")
        return saved["train"], saved["test"], saved["pad_id"]
    heldout = heldout_set(256)
    stream = TrainStream(seed=99, exclude={q.question for q in heldout})  # never a held-out question
    train, pad_id = _sample(model_path, [stream.next() for _ in range(1024)], 8, 1)
    test, _ = _sample(model_path, heldout, TEST_SAMPLES, 2)
    os.makedirs(Path(cache).parent, exist_ok=True)
    torch.save(dict(model=str(Path(model_path).resolve()), train=train, test=test, pad_id=pad_id), cache)
    return train, test, pad_id


def batchify(items, pad_id, delim_ids):
    """(input ids [B, P+T], attention mask, position ids, P, scored-position mask [B, T]): prompts left-padded to a
    common length P, responses right-padded, as the learner's TrainBatch."""
    p = max(len(x["prompt"]) for x in items)
    t = max(len(x["resp"]) for x in items)
    ids = torch.full((len(items), p + t), pad_id)
    att = torch.zeros_like(ids, dtype=torch.bool)
    for i, x in enumerate(items):
        ids[i, p - len(x["prompt"]):p] = torch.tensor(x["prompt"])
        ids[i, p:p + len(x["resp"])] = torch.tensor(x["resp"])
        att[i, p - len(x["prompt"]):p + len(x["resp"])] = True
    pos = (att.long().cumsum(1) - 1).clamp(min=0)
    return ids, att, pos, p, step_end_mask(ids[:, p:], att[:, p:], delim_ids)


def step_labels(items, mask):
    """[B, T] true per-step labels at the scored positions (-1 elsewhere, and where the counts do not line up)."""
    lab = torch.full(mask.shape, -1.0)
    for i, x in enumerate(items):
        where = mask[i].nonzero().flatten()
        if len(where) == len(x["truth"]):
            lab[i, where] = torch.tensor(x["truth"], dtype=torch.float)
    return lab


def delimiter_ids(model_path: str) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    return tok.convert_tokens_to_ids(tok.tokenize("\n\n"))


def report(name: str, s: torch.Tensor, c: torch.Tensor) -> str:
    """One line: pooled and within-question AUROC and best-of-8 of scores s [Q, n] for correctness c [Q, n]."""
    return (f"{name}: pooled {auroc(s.flatten(), c.flatten()):.3f} within-q {within_question_auroc(s, c):.3f} "
            f"best-of-8 {best_of_n(s, c, 8):.3f}")
