"""``rlpipe sft``: supervised fine-tuning on the learner ranks the RL stage uses.

The same session (Ray or local), learner (FSDP2 or DeepSpeed, token-budget micro-batches, packing), checkpoints and
exact resume, loggers, progress bar and Hugging Face export as ``rlpipe train``; only the step differs:

    rows = the next sft.rows_per_step rows of a shuffled pool          (each row once per epoch)
    loss = Σ −log π(y_t | y_<t) over the rows' trained tokens / their number        (one optimizer step)

with a warm-up + cosine learning rate (rlpipe.algos.schedule). Every ``sft.eval_every_steps`` steps: the held-out
loss, and, with ``sft.eval_accuracy``, the weights go to the rollout engines for greedy held-out accuracy on the data
section's problems, scored by the verifiers (the RL stage's evaluation, unchanged).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional

import torch

from rlpipe.algos.schedule import warmup_cosine_lr
from rlpipe.config.schema import Config
from rlpipe.driver.inputs import check_model_dir, load_prompts
from rlpipe.driver.prompts import ShuffledPool
from rlpipe.driver.session import LearnerSpec, Session
from rlpipe.driver.stage_loop import accuracy_eval, run_stage_command
from rlpipe.tasks.conversations import ChatEncoder, SupervisedExample, load_supervised, write_rows

log = logging.getLogger("rlpipe")


def start_model_dir(cfg: Config) -> str:
    """SFT starts from ``model.path``, or from the tiny model at random initialisation (``model.tiny.size``)."""
    if cfg.model.path:
        return check_model_dir(cfg.model.path, "model.path")
    from rlpipe.models.warmstart import warmstart

    t = cfg.model.tiny
    task = "tool_arithmetic" if cfg.data.task == "tool_arithmetic" else "arithmetic"  # its tokenizer has the tags
    return str(warmstart(size=t.size, steps=0, seed=t.seed, cache_dir=t.cache_dir,
                         think_tokens=cfg.data.mode != "none", task=task))


def supervised_data(cfg: Config, tokenizer, run_dir: Path) -> tuple[list[SupervisedExample], list[SupervisedExample]]:
    """(training rows, held-out rows): from ``sft.train_file`` / ``sft.heldout_file``, or teacher traces of the
    arithmetic task written to the run directory (the held-out rows then solve the held-out problems, which the
    training rows never contain)."""
    f, d = cfg.sft, cfg.data
    options = dict(max_tokens=f.max_seq_tokens, on_bad_row=d.on_bad_row,
                   quarantine=d.quarantine_file or run_dir / "quarantine.jsonl")
    train_file, heldout_file = f.train_file, f.heldout_file
    if train_file is None and d.task == "tool_arithmetic":
        train_file, heldout_file = tool_teacher_files(cfg, run_dir, heldout_file)
    if train_file is None:
        from rlpipe.driver.prompts import arithmetic_heldout, training_mode
        from rlpipe.tasks.arithmetic import teacher_rows_for, teacher_traces

        slip, seed = cfg.model.tiny.teacher_slip_rate, cfg.model.tiny.seed
        encoder = ChatEncoder(tokenizer)  # mixed mode counts trained tokens per mode
        problems = arithmetic_heldout(d)
        train_file = run_dir / "teacher_traces.jsonl"
        write_rows(train_file, teacher_traces(
            f.teacher_rows, seed, slip, exclude=[p.question for p in problems], recheck_rate=f.teacher_recheck_rate,
            operations=tuple(d.operations), mode=d.mode, reasoning_ratio=d.reasoning_ratio,
            count_tokens=lambda row: encoder.encode(row, "").loss_tokens))
        if heldout_file is None:
            heldout_file = run_dir / "teacher_traces_heldout.jsonl"
            write_rows(heldout_file, [row for p in problems for row in teacher_rows_for(
                [p], slip, seed, f.teacher_recheck_rate, training_mode(d.mode, p.uid))])
    train, _ = load_supervised(train_file, tokenizer, **options)
    if heldout_file is not None:
        heldout, _ = load_supervised(heldout_file, tokenizer, **options)
        return train, heldout
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.trainer.seed)).tolist()
    cut = min(f.heldout_rows, len(train) - f.rows_per_step)  # what is left must fill one step
    if cut < f.heldout_rows:
        log.warning("sft: only %d of sft.heldout_rows=%d rows held out (%s has %d rows)", max(cut, 0), f.heldout_rows,
                    train_file, len(train))
    cut = max(cut, 0)
    return [train[i] for i in order[cut:]], [train[i] for i in order[:cut]]


class SupervisedStage:
    name = "sft"
    headline = {"loss": "sft/loss", "heldout_loss": "eval/loss", "acc": "eval/accuracy"}

    def __init__(self, cfg: Config, session: Session, train: list[SupervisedExample],
                 heldout: list[SupervisedExample], problems: Optional[tuple]):
        self.f, self.learner = cfg.sft, session.learner
        self.total_steps, self.eval_every_steps = self.f.total_steps, self.f.eval_every_steps
        self.pool, self.heldout = ShuffledPool(train, cfg.trainer.seed), heldout
        self.accuracy = accuracy_eval(cfg, session, problems)

    def step(self, step: int) -> dict[str, float]:
        start = time.perf_counter()
        rows = self.pool.next_batch(self.f.rows_per_step)
        lr = warmup_cosine_lr(step - 1, self.f.total_steps, self.f.lr, self.f.warmup_ratio, self.f.min_lr_ratio)
        metrics = self.learner.supervised_update(rows, lr)
        metrics.update({"timing/update": time.perf_counter() - start, "actor/lr": lr, "sft/rows": float(len(rows)),
                        "sft/trained_tokens": float(sum(e.loss_tokens for e in rows)),
                        "sft/epoch": float(self.pool.epoch)})
        return metrics

    def evaluate(self, step: int) -> dict[str, float]:
        metrics = {"eval/loss": self.learner.supervised_loss(self.heldout)} if self.heldout else {}
        metrics.update(self.accuracy(step))
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"pool": self.pool.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pool.load_state_dict(state["pool"])


def run_sft(cfg: Config, resolved_config: dict[str, Any]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    model_path = start_model_dir(cfg)
    run_dir = Path(cfg.trainer.output_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    # The data is read and checked before any actor starts: a bad row fails in seconds, not after start-up.
    train, heldout = supervised_data(cfg, AutoTokenizer.from_pretrained(model_path), run_dir)
    log.info("sft: %d training rows (%d trained tokens), %d held-out rows", len(train),
             sum(e.loss_tokens for e in train), len(heldout))
    problems = None  # (tokenize, held-out problems with gold answers)
    if cfg.sft.eval_accuracy:
        tokenize, _, items = load_prompts(cfg, model_path)
        problems = (tokenize, items)
    return run_stage_command(cfg, resolved_config, model_path,
                             LearnerSpec(cfg.learner.num_workers, with_reference=False),
                             with_engines=cfg.sft.eval_accuracy,
                             make_stage=lambda session, _: SupervisedStage(cfg, session, train, heldout, problems))


def tool_teacher_files(cfg: Config, run_dir: Path, heldout_file) -> tuple[Path, Path]:
    """``data=tool_arithmetic``'s teacher conversations (rlpipe.tasks.tool_arithmetic) as the SFT data: the
    training rows, and (unless ``sft.heldout_file`` is given) the teacher on each held-out problem."""
    import random

    from rlpipe.driver.prompts import arithmetic_heldout
    from rlpipe.tasks.tool_arithmetic import teacher_row, teacher_traces

    t, problems = cfg.model.tiny, arithmetic_heldout(cfg.data)
    train_file = run_dir / "teacher_traces.jsonl"
    write_rows(train_file, teacher_traces(cfg.sft.teacher_rows, t.seed, t.teacher_tool_rate,
                                          exclude=[p.question for p in problems],
                                          bad_call_rate=t.teacher_bad_call_rate))
    if heldout_file is None:
        heldout_file = run_dir / "teacher_traces_heldout.jsonl"
        write_rows(heldout_file, [teacher_row(p, t.teacher_tool_rate, random.Random(f"{t.seed}/{p.uid}"),
                                              t.teacher_bad_call_rate) for p in problems])
    return train_file, heldout_file
