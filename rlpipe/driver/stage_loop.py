"""The run of a stage around RL (``rlpipe sft``, ``rlpipe prefer``): what every such command shares with ``rlpipe
train`` — the run directory, checkpoints and exact resume, the session, loggers, the progress bar, the summary and
the Hugging Face export — around a ``Stage`` that knows only its own step and evaluation.

    for step in first..total:  metrics = stage.step(step)            (one optimizer step; timing/<phase> inside)
                               + stage.evaluate(step) on schedule     (held-out loss / accuracy; timing/eval)
                               log, checkpoint on schedule
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import torch
from tqdm import tqdm

from rlpipe.config.schema import Config
from rlpipe.driver.actors import RemoteCallError
from rlpipe.driver.checkpoint import CheckpointManager, config_hash
from rlpipe.driver.run import abort_message, check_manifest, find_resume_point, truncate_rows
from rlpipe.driver.session import LearnerSpec, Session
from rlpipe.driver.trainer import heldout_accuracy
from rlpipe.errors import RunAborted
from rlpipe.process_env import STARTED_AT
from rlpipe.reporting.report import format_summary, write_summary
from rlpipe.reporting.sinks import build_sinks

log = logging.getLogger("rlpipe")


class Stage(Protocol):
    name: str  # "sft" | "prefer": the progress bar and the summary
    total_steps: int
    eval_every_steps: int
    headline: dict[str, str]  # progress-bar label -> metric key

    def step(self, step: int) -> dict[str, float]: ...

    def evaluate(self, step: int) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def accuracy_eval(cfg: Config, session: Session, problems: Optional[tuple]) -> Callable[[int], dict[str, float]]:
    """Greedy held-out accuracy on ``problems`` = (tokenize, held-out items) after pushing the learner's weights to
    the engines (the RL stage's evaluation); nothing when ``problems`` is None."""
    def evaluate(step: int) -> dict[str, float]:
        if problems is None:
            return {}
        session.rollout.load_weights(session.learner.export_weights(), version=step)
        tokenize, items = problems
        return heldout_accuracy(session.rollout, session.verifiers, tokenize, items, cfg.rollout.max_response_tokens)

    return evaluate


def run_stage_command(cfg: Config, resolved_config: dict[str, Any], model_path: str, learner: LearnerSpec,
                      with_engines: bool, make_stage: Callable[[Session, Path], Stage]) -> dict[str, Any]:
    """The whole command: resume point, run directory, session, the stage's loop, export, summary."""
    t = cfg.trainer
    run_dir = Path(t.output_dir).resolve()
    checkpoints = CheckpointManager(t.checkpoint_dir or run_dir / "checkpoints", t.keep_checkpoints)
    resume_from = find_resume_point(t.resume, checkpoints)  # decided before anything expensive starts
    run_hash = config_hash(resolved_config)
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("output directory: %s", run_dir)
    (run_dir / "config.json").write_text(json.dumps(resolved_config, indent=2))
    try:
        with Session(cfg, model_path, learner=learner, rollout=with_engines, verifiers=with_engines) as session:
            stage = make_stage(session, run_dir)
            first_step = 1 if resume_from is None else _restore(resume_from, session, stage, run_hash) + 1
            _loop(cfg, session, stage, first_step, checkpoints, run_hash, run_dir, resolved_config)
            session.learner.save_hf(str(run_dir / "final_model"), model_path)
    except RemoteCallError as e:
        raise RunAborted(abort_message(e, checkpoints)) from e
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["eval/loss"] for r in rows if "eval/loss" in r]
    summary = write_summary(run_dir, {"stage": stage.name, "steps": stage.total_steps,
                                      "wall_seconds": time.time() - STARTED_AT,
                                      "resumed_from_step": first_step - 1 if resume_from else None,
                                      "model_path": model_path, "heldout_loss_initial": losses[0] if losses else None,
                                      "heldout_loss_final": losses[-1] if losses else None})
    print(format_summary(summary, run_dir), flush=True)
    return summary


def _loop(cfg: Config, session: Session, stage: Stage, first_step: int, checkpoints: CheckpointManager,
          run_hash: str, run_dir: Path, resolved_config: dict) -> None:
    def evaluate(step: int) -> dict[str, float]:
        start = time.perf_counter()
        metrics = stage.evaluate(step)
        metrics["timing/eval"] = time.perf_counter() - start
        return metrics

    # As in rlpipe.driver.run: recomputed rows after a resume, and a fresh start's files start afresh.
    truncate_rows(run_dir / "metrics.jsonl", first_step - 1 if first_step > 1 else -1)
    sinks = build_sinks(cfg.logger.backends, run_dir, wandb_project=cfg.logger.wandb_project,
                        wandb_mode=cfg.logger.wandb_mode, config=resolved_config, console=not cfg.logger.progress_bar)
    shown: dict[str, float] = {}
    if first_step == 1:
        shown = evaluate(0)
        sinks.log(0, {**shown, "time/elapsed_s": time.time() - STARTED_AT})
        log.info("%s: initial held-out %s", stage.name, _describe(stage, shown))
    bar = tqdm(range(first_step, stage.total_steps + 1), desc=f"rlpipe {stage.name}", unit="step",
               disable=not cfg.logger.progress_bar, dynamic_ncols=True)
    for step in bar:
        start = time.perf_counter()
        metrics = stage.step(step)
        if step % stage.eval_every_steps == 0 or step == stage.total_steps:
            shown = evaluate(step)
            metrics.update(shown)
        metrics["timing/step"] = time.perf_counter() - start
        metrics["time/elapsed_s"] = time.time() - STARTED_AT
        sinks.log(step, metrics)
        if cfg.trainer.save_every_steps and step % cfg.trainer.save_every_steps == 0:
            _save(checkpoints, step, session, stage, run_hash, session.learner.dp_size)
        bar.set_postfix({label: f"{v[key]:.3f}" for label, key in stage.headline.items()
                         for v in (metrics, shown) if key in v})
    bar.close()
    sinks.close()


def _describe(stage: Stage, metrics: dict[str, float]) -> str:
    parts = [f"{label} {metrics[key]:.4f}" for label, key in stage.headline.items() if key in metrics]
    return ", ".join(parts) or "(nothing to evaluate)"


def _save(checkpoints: CheckpointManager, step: int, session: Session, stage: Stage, run_hash: str,
          world_size: int) -> Path:
    def write(tmp: Path) -> None:
        session.learner.save_checkpoint(str(tmp / "learner"))
        torch.save({"step": step, "stage": stage.state_dict(), "python_random": random.getstate(),
                    "torch_random": torch.get_rng_state()}, tmp / "driver.pt")

    start = time.perf_counter()
    path = checkpoints.save(step, write, config_hash=run_hash, world_size=world_size)
    log.info("checkpoint at step %d (%.1f s)", step, time.perf_counter() - start)
    return path


def _restore(path: Path, session: Session, stage: Stage, run_hash: str) -> int:
    check_manifest(path, run_hash, session.learner.dp_size)
    session.learner.load_checkpoint(str(path / "learner"))
    state = torch.load(path / "driver.pt", weights_only=False)
    stage.load_state_dict(state["stage"])
    random.setstate(state["python_random"])
    torch.set_rng_state(state["torch_random"])
    log.info("resumed from %s (step %d)", path, state["step"])
    return state["step"]
