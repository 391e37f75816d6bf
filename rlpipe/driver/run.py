"""One training run: check inputs, build the session, resume or evaluate, train with evaluation and checkpoints on
schedule, export, report."""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any, Optional

import torch
from tqdm import tqdm

from rlpipe.config.schema import Config
from rlpipe.driver import build
from rlpipe.driver.actors import RemoteCallError, WorkerDied
from rlpipe.driver.checkpoint import CheckpointManager, config_hash
from rlpipe.driver.inputs import check_context_length, check_model_dir, load_prompts
from rlpipe.driver.session import LearnerSpec, Session
from rlpipe.driver.trainer import Trainer, heldout_accuracy
from rlpipe.errors import RunAborted, UserError
from rlpipe.process_env import STARTED_AT
from rlpipe.reporting.report import format_summary, write_summary
from rlpipe.reporting.sinks import build_sinks

log = logging.getLogger("rlpipe")


class ResumeError(UserError):
    pass


def abort_message(error: Exception, checkpoints: CheckpointManager) -> str:
    lines = [str(error)]
    if isinstance(error, WorkerDied) and error.role == "learner":
        lines.append("A learner rank's process ended (killed — e.g. by the out-of-memory killer —, crashed, or its "
                     "node was lost); the other ranks cannot continue without it.")
    latest = checkpoints.latest_valid()
    lines.append(f"Last complete checkpoint: {latest}; rerun with trainer.resume=auto to continue from it."
                 if latest else "No checkpoint was written yet (trainer.save_every_steps sets the interval).")
    return "\n".join(lines)


def run(cfg: Config, resolved_config: dict[str, Any]) -> dict[str, Any]:
    t = cfg.trainer
    run_dir = Path(t.output_dir).resolve()
    checkpoints = CheckpointManager(t.checkpoint_dir or run_dir / "checkpoints", t.keep_checkpoints)
    resume_from = find_resume_point(t.resume, checkpoints)  # decided before anything expensive starts
    run_hash = config_hash(resolved_config)
    model_path = check_model_dir(build.model_dir(cfg), "model.path")
    check_context_length(model_path, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("output directory: %s", run_dir)
    (run_dir / "config.json").write_text(json.dumps(resolved_config, indent=2))
    tokenize, prompts, heldout = load_prompts(cfg, model_path, quarantine=str(run_dir / "quarantine.jsonl"))

    try:
        with Session(cfg, model_path, learner=LearnerSpec.of(cfg, model_path)) as session:
            trainer = session.trainer(prompts, tokenize)
            first_step = 1 if resume_from is None else restore(resume_from, trainer, run_hash) + 1
            train_loop(cfg, trainer, session, heldout, tokenize, first_step, checkpoints, run_hash, run_dir,
                       resolved_config)
            session.learner.save_hf(str(run_dir / "final_model"), model_path)
    except RemoteCallError as e:
        raise RunAborted(abort_message(e, checkpoints)) from e
    summary = write_summary(run_dir, {"steps": t.total_steps, "wall_seconds": time.time() - STARTED_AT,
                                      "resumed_from_step": first_step - 1 if resume_from else None,
                                      "model_path": model_path, "algorithm": cfg.algorithm.name})
    print(format_summary(summary, run_dir), flush=True)
    return summary


def train_loop(cfg: Config, trainer: Trainer, session: Session, heldout, tokenize, first_step: int,
               checkpoints: CheckpointManager, run_hash: str, run_dir: Path, resolved_config: dict) -> None:
    t = cfg.trainer

    def evaluate() -> dict[str, float]:
        start = time.perf_counter()
        metrics = heldout_accuracy(session.rollout, session.verifiers, tokenize, heldout,
                                   cfg.rollout.max_response_tokens)
        metrics["timing/eval"] = time.perf_counter() - start
        return metrics

    # Rows a crashed run logged after its last checkpoint are about to be recomputed; a run that starts afresh in a
    # directory used before starts its files afresh too (its summary would otherwise read the old run's rows).
    for name in ("metrics.jsonl", "ledger.jsonl", "events.jsonl"):
        truncate_rows(run_dir / name, first_step - 1 if first_step > 1 else -1)
    sinks = build_sinks(cfg.logger.backends, run_dir, wandb_project=cfg.logger.wandb_project,
                        wandb_mode=cfg.logger.wandb_mode, config=resolved_config, console=not cfg.logger.progress_bar)
    last_accuracy = float("nan")
    with open(run_dir / "events.jsonl", "a", encoding="utf-8") as events, \
            open(run_dir / "ledger.jsonl", "a", encoding="utf-8") as ledger:
        if first_step == 1:
            first = evaluate()
            last_accuracy = first["eval/accuracy"]
            sinks.log(0, {**first, "time/elapsed_s": time.time() - STARTED_AT})
            log.info("initial held-out accuracy: %.1f%% (%d problems)", 100 * last_accuracy, len(heldout))
        bar = tqdm(range(first_step, t.total_steps + 1), desc="rlpipe", unit="step",
                   disable=not cfg.logger.progress_bar, dynamic_ncols=True)
        for step in bar:
            metrics = trainer.step(step)
            ledger.write(json.dumps({"step": step, "samples": trainer.last_ledger,
                                     "policy_versions": trainer.last_versions}) + "\n")
            ledger.flush()
            if step % t.eval_every_steps == 0 or step == t.total_steps:
                metrics.update(evaluate())
                last_accuracy = metrics["eval/accuracy"]
            event = trainer.maybe_reset_reference(step, metrics)
            if event is not None:
                metrics["reset/reference"] = 1.0
                events.write(json.dumps({"event": "reference_reset", **event}) + "\n")
                events.flush()
            metrics["time/elapsed_s"] = time.time() - STARTED_AT
            sinks.log(step, metrics)
            if t.save_every_steps and step % t.save_every_steps == 0:
                start = time.perf_counter()
                save(checkpoints, step, trainer, run_hash, cfg.learner.num_workers)
                log.info("checkpoint at step %d (%.1f s)", step, time.perf_counter() - start)
            # The accuracy shown is the last evaluation's (held-out accuracy is not measured every step).
            reward = metrics.get("rollout/reward_mean", float("nan"))  # absent on a skipped step
            bar.set_postfix(reward=f"{reward:.3f}", acc=f"{last_accuracy:.3f}")
        bar.close()
    sinks.close()


# --- checkpoints ------------------------------------------------------------------------------------------------


def find_resume_point(resume: str, checkpoints: CheckpointManager) -> Optional[Path]:
    """``trainer.resume`` -> the checkpoint to continue from, or None for a fresh start (see the field's help)."""
    if resume == "never":
        return None
    if resume == "auto":
        if not any(checkpoints.root.glob("step_*")):
            return None
        found = checkpoints.latest_valid()
        if found is None:
            raise ResumeError(f"trainer.resume=auto: {checkpoints.root} holds checkpoints but none is valid "
                              f"(see the warnings above); pass trainer.resume=never to start over")
        return found
    path = Path(resume)
    problem = CheckpointManager.verify(path)
    if problem is not None:
        raise ResumeError(f"trainer.resume={resume}: not a valid checkpoint ({problem})")
    return path


def save(checkpoints: CheckpointManager, step: int, trainer: Trainer, run_hash: str, world_size: int) -> Path:
    def write(tmp: Path) -> None:
        trainer.learner.save_checkpoint(str(tmp / "learner"))
        torch.save({
            "step": step,
            "prompts": trainer.prompts.state_dict(),
            "resets": trainer.resets.state_dict(),
            "collector": trainer.collector.state_dict(),  # rounds drawn ahead of the step, with their samples
            "policy_version": trainer.rollout.version,
            "python_random": random.getstate(),
            "torch_random": torch.get_rng_state(),
        }, tmp / "driver.pt")

    return checkpoints.save(step, write, config_hash=run_hash, world_size=world_size)


def restore(path: Path, trainer: Trainer, run_hash: str) -> int:
    """Load a checkpoint into the running roles; returns its step. Rollout engines get the restored weights."""
    check_manifest(path, run_hash, trainer.learner.dp_size)
    trainer.learner.load_checkpoint(str(path / "learner"))
    state = torch.load(path / "driver.pt", weights_only=False)
    trainer.prompts.load_state_dict(state["prompts"])
    trainer.resets.load_state_dict(state["resets"])
    random.setstate(state["python_random"])
    torch.set_rng_state(state["torch_random"])
    trainer.collector.load_state_dict(state["collector"])
    trainer.rollout.load_weights(trainer.learner.export_weights(), version=state["policy_version"])
    log.info("resumed from %s (step %d)", path, state["step"])
    return state["step"]


def check_manifest(path: Path, run_hash: str, world_size: int) -> None:
    """A checkpoint resumes only the run that wrote it: the same settings and the same number of learner ranks."""
    manifest = json.loads((path / "manifest.json").read_text())
    if manifest["config_hash"] != run_hash:
        raise ResumeError(f"{path} was written by a run with different settings (config hash "
                          f"{manifest['config_hash']} != {run_hash}); resume with the same config or "
                          f"trainer.resume=never")
    if manifest["world_size"] != world_size:
        raise ResumeError(f"{path} was written by {manifest['world_size']} learner ranks, this run has "
                          f"{world_size}")


def truncate_rows(path: Path, last_step: int) -> None:
    """Keep the rows of steps <= ``last_step`` (-1: none); the others are about to be recomputed."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", -1) <= last_step]
    path.write_text("".join(line + "\n" for line in rows))
