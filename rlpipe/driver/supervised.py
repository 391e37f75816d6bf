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

import json
import logging
import random
import time
from pathlib import Path
from typing import Any, Optional

import torch
from tqdm import tqdm

from rlpipe.algos.schedule import warmup_cosine_lr
from rlpipe.config.schema import Config
from rlpipe.driver.actors import RemoteCallError
from rlpipe.driver.checkpoint import CheckpointManager, config_hash
from rlpipe.driver.inputs import check_model_dir, load_prompts
from rlpipe.driver.prompts import ShuffledPool
from rlpipe.driver.run import abort_message, check_manifest, find_resume_point, truncate_rows
from rlpipe.driver.session import LearnerSpec, Session
from rlpipe.driver.trainer import heldout_accuracy
from rlpipe.errors import RunAborted
from rlpipe.process_env import STARTED_AT
from rlpipe.reporting.report import format_summary, write_summary
from rlpipe.reporting.sinks import build_sinks
from rlpipe.tasks.conversations import SupervisedExample, load_supervised, write_rows

log = logging.getLogger("rlpipe")


def start_model_dir(cfg: Config) -> str:
    """SFT starts from ``model.path``, or from the tiny model at random initialisation (``model.tiny.size``)."""
    if cfg.model.path:
        return check_model_dir(cfg.model.path, "model.path")
    from rlpipe.models.warmstart import warmstart

    t = cfg.model.tiny
    return str(warmstart(size=t.size, steps=0, seed=t.seed, cache_dir=t.cache_dir))


def supervised_data(cfg: Config, tokenizer, run_dir: Path) -> tuple[list[SupervisedExample], list[SupervisedExample]]:
    """(training rows, held-out rows): from ``sft.train_file`` / ``sft.heldout_file``, or teacher traces of the
    arithmetic task written to the run directory (the held-out rows then solve the held-out problems, which the
    training rows never contain)."""
    f, d = cfg.sft, cfg.data
    options = dict(max_tokens=f.max_seq_tokens, on_bad_row=d.on_bad_row,
                   quarantine=d.quarantine_file or run_dir / "quarantine.jsonl")
    train_file, heldout_file = f.train_file, f.heldout_file
    if train_file is None:
        from rlpipe.tasks.arithmetic import heldout_set, teacher_rows_for, teacher_traces

        slip = cfg.model.tiny.teacher_slip_rate
        problems = heldout_set(n=d.heldout_size, seed=d.seed + 1)
        train_file = run_dir / "teacher_traces.jsonl"
        write_rows(train_file, teacher_traces(f.teacher_rows, cfg.model.tiny.seed, slip,
                                              exclude=[p.question for p in problems]))
        if heldout_file is None:
            heldout_file = run_dir / "teacher_traces_heldout.jsonl"
            write_rows(heldout_file, teacher_rows_for(problems, slip, cfg.model.tiny.seed))
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


def run_sft(cfg: Config, resolved_config: dict[str, Any]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    f, t = cfg.sft, cfg.trainer
    run_dir = Path(t.output_dir).resolve()
    checkpoints = CheckpointManager(t.checkpoint_dir or run_dir / "checkpoints", t.keep_checkpoints)
    resume_from = find_resume_point(t.resume, checkpoints)
    run_hash = config_hash(resolved_config)
    model_path = start_model_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("output directory: %s", run_dir)
    (run_dir / "config.json").write_text(json.dumps(resolved_config, indent=2))
    train, heldout = supervised_data(cfg, AutoTokenizer.from_pretrained(model_path), run_dir)
    log.info("sft: %d training rows (%d trained tokens), %d held-out rows", len(train),
             sum(e.loss_tokens for e in train), len(heldout))
    problems = None  # (tokenize, held-out problems with gold answers)
    if f.eval_accuracy:
        tokenize, _, items = load_prompts(cfg, model_path)
        problems = (tokenize, items)
    pool = ShuffledPool(train, t.seed)
    try:
        with Session(cfg, model_path, learner=LearnerSpec(cfg.learner.num_workers, with_reference=False),
                     rollout=f.eval_accuracy, verifiers=f.eval_accuracy) as session:
            first_step = 1 if resume_from is None else _restore(resume_from, session, pool, run_hash) + 1
            _loop(cfg, session, pool, heldout, problems, first_step, checkpoints, run_hash, run_dir,
                  resolved_config)
            session.learner.save_hf(str(run_dir / "final_model"), model_path)
    except RemoteCallError as e:
        raise RunAborted(abort_message(e, checkpoints)) from e
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["eval/loss"] for r in rows if "eval/loss" in r]
    summary = write_summary(run_dir, {"stage": "sft", "steps": f.total_steps, "wall_seconds": time.time() - STARTED_AT,
                                      "resumed_from_step": first_step - 1 if resume_from else None,
                                      "model_path": model_path, "heldout_loss_initial": losses[0] if losses else None,
                                      "heldout_loss_final": losses[-1] if losses else None})
    print(format_summary(summary, run_dir), flush=True)
    return summary


def _loop(cfg: Config, session: Session, pool: ShuffledPool, heldout: list[SupervisedExample],
          problems: Optional[tuple], first_step: int, checkpoints: CheckpointManager, run_hash: str, run_dir: Path,
          resolved_config: dict) -> None:
    f, t = cfg.sft, cfg.trainer
    learner = session.learner

    def evaluate(step: int) -> dict[str, float]:
        start = time.perf_counter()
        metrics = {"eval/loss": learner.supervised_loss(heldout)} if heldout else {}
        if problems is not None:
            session.rollout.load_weights(learner.export_weights(), version=step)
            tokenize, items = problems
            metrics.update(heldout_accuracy(session.rollout, session.verifiers, tokenize, items,
                                            cfg.rollout.max_response_tokens))
        metrics["timing/eval"] = time.perf_counter() - start
        return metrics

    if first_step > 1:
        truncate_rows(run_dir / "metrics.jsonl", first_step - 1)
    sinks = build_sinks(cfg.logger.backends, run_dir, wandb_project=cfg.logger.wandb_project,
                        wandb_mode=cfg.logger.wandb_mode, config=resolved_config, console=not cfg.logger.progress_bar)
    shown: dict[str, float] = {}
    if first_step == 1:
        shown = evaluate(0)
        sinks.log(0, {**shown, "time/elapsed_s": time.time() - STARTED_AT})
        log.info("sft: initial held-out %s", _describe(shown))
    bar = tqdm(range(first_step, f.total_steps + 1), desc="rlpipe sft", unit="step",
               disable=not cfg.logger.progress_bar, dynamic_ncols=True)
    for step in bar:
        start = time.perf_counter()
        rows = pool.next_batch(f.rows_per_step)
        lr = warmup_cosine_lr(step - 1, f.total_steps, f.lr, f.warmup_ratio, f.min_lr_ratio)
        metrics = learner.supervised_update(rows, lr)
        metrics.update({"timing/update": time.perf_counter() - start, "actor/lr": lr, "sft/rows": float(len(rows)),
                        "sft/trained_tokens": float(sum(e.loss_tokens for e in rows)), "sft/epoch": float(pool.epoch)})
        if step % f.eval_every_steps == 0 or step == f.total_steps:
            shown = evaluate(step)
            metrics.update(shown)
        metrics["timing/step"] = time.perf_counter() - start
        metrics["time/elapsed_s"] = time.time() - STARTED_AT
        sinks.log(step, metrics)
        if t.save_every_steps and step % t.save_every_steps == 0:
            _save(checkpoints, step, session, pool, run_hash, cfg.learner.num_workers)
        bar.set_postfix(loss=f"{metrics['sft/loss']:.3f}", **{k: f"{v:.3f}" for k, v in _short(shown).items()})
    bar.close()
    sinks.close()


def _short(metrics: dict[str, float]) -> dict[str, float]:
    return {name: metrics[key] for name, key in (("heldout_loss", "eval/loss"), ("acc", "eval/accuracy"))
            if key in metrics}


def _describe(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in _short(metrics).items()) or "(nothing to evaluate)"


def _save(checkpoints: CheckpointManager, step: int, session: Session, pool: ShuffledPool, run_hash: str,
          world_size: int) -> Path:
    def write(tmp: Path) -> None:
        session.learner.save_checkpoint(str(tmp / "learner"))
        torch.save({"step": step, "pool": pool.state_dict(), "python_random": random.getstate(),
                    "torch_random": torch.get_rng_state()}, tmp / "driver.pt")

    start = time.perf_counter()
    path = checkpoints.save(step, write, config_hash=run_hash, world_size=world_size)
    log.info("checkpoint at step %d (%.1f s)", step, time.perf_counter() - start)
    return path


def _restore(path: Path, session: Session, pool: ShuffledPool, run_hash: str) -> int:
    check_manifest(path, run_hash, session.learner.dp_size)
    session.learner.load_checkpoint(str(path / "learner"))
    state = torch.load(path / "driver.pt", weights_only=False)
    pool.load_state_dict(state["pool"])
    random.setstate(state["python_random"])
    torch.set_rng_state(state["torch_random"])
    log.info("resumed from %s (step %d)", path, state["step"])
    return state["step"]
