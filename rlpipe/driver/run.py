"""One training run: build everything, resume or evaluate, train with evaluation and checkpoints on schedule,
export, report."""

from __future__ import annotations

import json
import logging
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

import torch
from tqdm import tqdm

from rlpipe.config.schema import Config
from rlpipe.driver import build, cluster
from rlpipe.driver.checkpoint import CheckpointManager, config_hash
from rlpipe.driver.groups import RemoteCallError, WorkerDied
from rlpipe.driver.prompts import build_prompts, chat_length, chat_tokenizer
from rlpipe.driver.trainer import Trainer
from rlpipe.reporting.report import format_summary, write_summary
from rlpipe.reporting.sinks import build_sinks

log = logging.getLogger("rlpipe")


class ResumeError(RuntimeError):
    pass


class RunAborted(RuntimeError):
    """A worker died or hung: the run cannot go on. The message says which, why, and how to continue."""


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
    start = time.time()
    t = cfg.trainer
    run_dir = Path(t.output_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("output directory: %s", run_dir)
    (run_dir / "config.json").write_text(json.dumps(resolved_config, indent=2))
    checkpoints = CheckpointManager(t.checkpoint_dir or run_dir / "checkpoints", t.keep_checkpoints)
    resume_from = find_resume_point(t.resume, checkpoints)  # decided before anything expensive starts
    run_hash = config_hash(resolved_config)

    model_path = build.model_dir(cfg)
    tokenize, tokenizer = chat_tokenizer(model_path, cfg.data.max_prompt_tokens)
    prompts, heldout = build_prompts(cfg.data, chat_length(tokenizer), quarantine=str(run_dir / "quarantine.jsonl"))
    max_model_len = cfg.data.max_prompt_tokens + cfg.rollout.max_response_tokens

    session = (cluster.ray_session(cfg.cluster.address, max(build.actors_needed(cfg), 2))
               if cfg.cluster.mode == "ray" else nullcontext())
    try:
        with session:
            roles = build.build_roles(cfg, model_path, max_model_len)
            trainer = make_trainer(cfg, roles, prompts, tokenize, tokenizer)
            evaluate = lambda: trainer.evaluate(heldout, cfg.rollout.max_response_tokens)  # noqa: E731
            first_step = 1
            if resume_from is not None:
                first_step = restore(resume_from, trainer, roles, run_hash) + 1
                truncate_metrics(run_dir / "metrics.jsonl", first_step - 1)
                truncate_metrics(run_dir / "ledger.jsonl", first_step - 1)
            sinks = build_sinks(cfg.logger.backends, run_dir, wandb_project=cfg.logger.wandb_project,
                                wandb_mode=cfg.logger.wandb_mode, config=resolved_config,
                                console=not cfg.logger.progress_bar)
            events = open(run_dir / "events.jsonl", "a", encoding="utf-8")
            ledger = open(run_dir / "ledger.jsonl", "a", encoding="utf-8")
            if resume_from is None:
                first = timed_eval(evaluate)
                sinks.log(0, first)
                log.info("initial held-out accuracy: %.1f%% (%d problems)", 100 * first["eval/accuracy"], len(heldout))
            bar = tqdm(range(first_step, t.total_steps + 1), desc="rlpipe", unit="step",
                       disable=not cfg.logger.progress_bar, dynamic_ncols=True)
            for step in bar:
                metrics = trainer.step(step)
                ledger.write(json.dumps({"step": step, "samples": trainer.last_ledger}) + "\n")
                ledger.flush()
                if step % t.eval_every_steps == 0 or step == t.total_steps:
                    metrics.update(timed_eval(evaluate))
                event = trainer.maybe_reset_reference(step, metrics)
                if event is not None:
                    metrics["reset/reference"] = 1.0
                    events.write(json.dumps({"event": "reference_reset", **event}) + "\n")
                    events.flush()
                sinks.log(step, metrics)
                if t.save_every_steps and step % t.save_every_steps == 0:
                    with_timing = time.perf_counter()
                    save(checkpoints, step, trainer, roles, run_hash, cfg.learner.num_workers)
                    log.info("checkpoint at step %d (%.1f s)", step, time.perf_counter() - with_timing)
                bar.set_postfix(reward=f"{metrics['rollout/reward_mean']:.3f}",
                                acc=f"{metrics.get('eval/accuracy', float('nan')):.3f}")
            bar.close()
            events.close()
            ledger.close()
            sinks.close()
            roles.learner.save_hf(str(run_dir / "final_model"), model_path)
            roles.shutdown()
    except RemoteCallError as e:
        raise RunAborted(abort_message(e, checkpoints)) from e
    summary = write_summary(run_dir, {"steps": t.total_steps, "wall_seconds": time.time() - start,
                                      "resumed_from_step": first_step - 1 if resume_from else None,
                                      "model_path": model_path, "algorithm": cfg.algorithm.name})
    print(format_summary(summary, run_dir), flush=True)
    return summary


def make_trainer(cfg: Config, roles: build.Roles, prompts, tokenize, tokenizer) -> Trainer:
    return Trainer(
        prompts=prompts,
        tokenize=tokenize,
        pad_id=tokenizer.pad_token_id,
        rollout=roles.rollout,
        verifiers=roles.verifiers,
        learner=roles.learner,
        settings=build.step_settings(cfg),
        resets=build.reset_policy(cfg),
    )


def timed_eval(evaluate) -> dict[str, float]:
    t0 = time.perf_counter()
    metrics = evaluate()
    metrics["timing/eval"] = time.perf_counter() - t0
    return metrics


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


def save(checkpoints: CheckpointManager, step: int, trainer: Trainer, roles: build.Roles, run_hash: str,
         world_size: int) -> Path:
    def write(tmp: Path) -> None:
        roles.learner.save_checkpoint(str(tmp / "learner"))
        torch.save({
            "step": step,
            "prompts": trainer.prompts.state_dict(),
            "resets": trainer.resets.state_dict(),
            "python_random": random.getstate(),
            "torch_random": torch.get_rng_state(),
        }, tmp / "driver.pt")

    return checkpoints.save(step, write, config_hash=run_hash, world_size=world_size)


def restore(path: Path, trainer: Trainer, roles: build.Roles, run_hash: str) -> int:
    """Load a checkpoint into the running roles; returns its step. Rollout engines get the restored weights."""
    manifest = json.loads((path / "manifest.json").read_text())
    if manifest["config_hash"] != run_hash:
        raise ResumeError(f"{path} was written by a run with different settings (config hash "
                          f"{manifest['config_hash']} != {run_hash}); resume with the same config or "
                          f"trainer.resume=never")
    if manifest["world_size"] != roles.learner.dp_size:
        raise ResumeError(f"{path} was written by {manifest['world_size']} learner ranks, this run has "
                          f"{roles.learner.dp_size}")
    roles.learner.load_checkpoint(str(path / "learner"))
    state = torch.load(path / "driver.pt", weights_only=False)
    trainer.prompts.load_state_dict(state["prompts"])
    trainer.resets.load_state_dict(state["resets"])
    random.setstate(state["python_random"])
    torch.set_rng_state(state["torch_random"])
    roles.rollout.load_weights(roles.learner.export_weights())
    log.info("resumed from %s (step %d)", path, state["step"])
    return state["step"]


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop rows a crashed run logged after its last checkpoint: they are about to be recomputed."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in rows))
