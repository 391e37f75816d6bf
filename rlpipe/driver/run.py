"""One training run: build everything, evaluate, train, evaluate on schedule, export, report."""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rlpipe.config.schema import Config
from rlpipe.driver import build, cluster
from rlpipe.driver.prompts import build_prompts, chat_tokenizer
from rlpipe.driver.trainer import Trainer
from rlpipe.reporting.report import format_summary, write_summary
from rlpipe.reporting.sinks import build_sinks

log = logging.getLogger("rlpipe")


def run(cfg: Config, resolved_config: dict[str, Any]) -> dict[str, Any]:
    start = time.time()
    run_dir = Path(cfg.trainer.output_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("output directory: %s", run_dir)
    (run_dir / "config.json").write_text(json.dumps(resolved_config, indent=2))

    model_path = build.model_dir(cfg)
    tokenize, tokenizer = chat_tokenizer(model_path, cfg.data.max_prompt_tokens)
    prompts, heldout = build_prompts(cfg.data)
    max_model_len = cfg.data.max_prompt_tokens + cfg.rollout.max_response_tokens

    session = (cluster.ray_session(cfg.cluster.address, max(build.actors_needed(cfg), 2))
               if cfg.cluster.mode == "ray" else nullcontext())
    sinks = build_sinks(cfg.logger.backends, run_dir, wandb_project=cfg.logger.wandb_project,
                        wandb_mode=cfg.logger.wandb_mode, config=resolved_config,
                        console=not cfg.logger.progress_bar)
    with session:
        roles = build.build_roles(cfg, model_path, max_model_len)
        trainer = make_trainer(cfg, roles, prompts, tokenize, tokenizer)
        evaluate = lambda: trainer.evaluate(heldout, cfg.rollout.max_response_tokens)  # noqa: E731
        t = cfg.trainer
        events = open(run_dir / "events.jsonl", "a", encoding="utf-8")
        first = timed_eval(evaluate)
        sinks.log(0, first)
        log.info("initial held-out accuracy: %.1f%% (%d problems)", 100 * first["eval/accuracy"], len(heldout))
        bar = tqdm(range(1, t.total_steps + 1), desc="rlpipe", unit="step", disable=not cfg.logger.progress_bar,
                   dynamic_ncols=True)
        last_acc = first["eval/accuracy"]
        for step in bar:
            metrics = trainer.step(step)
            if step % t.eval_every_steps == 0 or step == t.total_steps:
                ev = timed_eval(evaluate)
                metrics.update(ev)
                last_acc = ev["eval/accuracy"]
            event = trainer.maybe_reset_reference(step, metrics)
            if event is not None:
                metrics["reset/reference"] = 1.0
                events.write(json.dumps({"event": "reference_reset", **event}) + "\n")
                events.flush()
            if t.save_every_steps and step % t.save_every_steps == 0 and step != t.total_steps:
                roles.learner.save_hf(str(run_dir / "checkpoints" / f"step_{step:06d}"), model_path)
            sinks.log(step, metrics)
            bar.set_postfix(reward=f"{metrics['rollout/reward_mean']:.3f}", acc=f"{last_acc:.3f}")
        bar.close()
        events.close()
        roles.learner.save_hf(str(run_dir / "final_model"), model_path)
        roles.shutdown()
    sinks.close()
    summary = write_summary(run_dir, {"steps": cfg.trainer.total_steps, "wall_seconds": time.time() - start,
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
