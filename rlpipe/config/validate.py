"""Checks that need more than a type: run once, before Ray or any actor starts. Errors name the field."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from rlpipe.config.schema import Config


class ConfigError(ValueError):
    pass


def _choice(field: str, value: str, valid) -> list[str]:
    valid = sorted(valid)
    return [] if value in valid else [f"{field}={value!r} is not one of {valid}"]


def _positive(field: str, value: float) -> list[str]:
    return [] if value > 0 else [f"{field} must be > 0 (got {value})"]


def validate(cfg: Config) -> None:
    from rlpipe.algos.advantages import ADVANTAGE_ESTIMATORS
    from rlpipe.algos.policy_loss import POLICY_LOSSES

    a, r, lr, t, c = cfg.algorithm, cfg.rollout, cfg.learner, cfg.trainer, cfg.cluster
    errors: list[str] = []
    errors += _choice("algorithm.advantage", a.advantage, ADVANTAGE_ESTIMATORS.names())
    errors += _choice("algorithm.policy_loss", a.policy_loss, POLICY_LOSSES.names())
    errors += _choice("algorithm.loss_aggregation", a.loss_aggregation,
                      ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
    errors += _choice("algorithm.kl_estimator", a.kl_estimator, ["k1", "k2", "k3"])
    errors += _choice("algorithm.kl_level", a.kl_level, ["token", "sequence"])
    errors += _choice("algorithm.kl_in", a.kl_in, ["loss", "reward"])
    errors += _choice("rollout.engine", r.engine, ["vllm", "hf"])
    errors += _choice("learner.backend", lr.backend, ["fsdp2", "deepspeed"])
    if lr.deepspeed.zero_stage not in (1, 2, 3):
        errors.append(f"learner.deepspeed.zero_stage must be 1, 2 or 3 (got {lr.deepspeed.zero_stage})")
    errors += _choice("cluster.mode", c.mode, ["ray", "local"])
    errors += _choice("cluster.placement", c.placement, ["colocated", "split"])
    errors += _choice("cluster.learner_placement_strategy", c.learner_placement_strategy,
                      ["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"])
    errors += _choice("data.task", cfg.data.task, ["arithmetic", "file"])
    for name, value in [
        ("trainer.total_steps", t.total_steps), ("data.prompts_per_step", cfg.data.prompts_per_step),
        ("rollout.samples_per_prompt", r.samples_per_prompt), ("rollout.max_response_tokens", r.max_response_tokens),
        ("rollout.num_engines", r.num_engines), ("learner.num_workers", lr.num_workers),
        ("learner.updates_per_step", lr.updates_per_step), ("learner.micro_batch_samples", lr.micro_batch_samples),
        ("learner.lr", lr.lr), ("verifier.num_workers", cfg.verifier.num_workers),
        ("trainer.eval_every_steps", t.eval_every_steps), ("data.heldout_size", cfg.data.heldout_size),
    ]:
        errors += _positive(name, value)
    if r.temperature < 0:
        errors.append(f"rollout.temperature must be >= 0 (got {r.temperature})")
    if a.kl_coef < 0:
        errors.append(f"algorithm.kl_coef must be >= 0 (got {a.kl_coef})")
    if a.loss_aggregation == "seq_mean_token_sum_norm" and a.loss_constant is not None and a.loss_constant <= 0:
        errors.append("algorithm.loss_constant must be > 0")
    if c.mode == "local" and lr.num_workers != 1:
        errors.append(f"cluster.mode=local runs everything in one process, so learner.num_workers must be 1 "
                      f"(got {lr.num_workers}); `cluster=local` selects both")
    if c.mode == "local" and (r.num_engines != 1 or cfg.verifier.num_workers != 1):
        errors.append("cluster.mode=local runs one rollout engine and one verifier (rollout.num_engines=1, "
                      "verifier.num_workers=1)")
    if cfg.data.prompts_per_step * r.samples_per_prompt < lr.num_workers:
        errors.append("data.prompts_per_step * rollout.samples_per_prompt must be >= learner.num_workers")
    d = cfg.data
    errors += _choice("data.sampler", d.sampler, ["sequential", "curriculum"])
    if d.pool_size < 0:
        errors.append(f"data.pool_size must be >= 0 (got {d.pool_size})")
    if (d.sampler == "curriculum" or d.pass_rate_table) and d.pool_size == 0 and d.task != "file":
        errors.append("data.sampler=curriculum and data.pass_rate_table need a fixed pool: set data.pool_size > 0 "
                      "(a data file is a fixed pool already)")
    if not 0 <= d.pass_rate_min <= d.pass_rate_max <= 1:
        errors.append(f"need 0 <= data.pass_rate_min <= data.pass_rate_max <= 1 "
                      f"(got {d.pass_rate_min}, {d.pass_rate_max})")
    if not 0 < d.curriculum_ema <= 1:
        errors.append(f"data.curriculum_ema must be in (0, 1] (got {d.curriculum_ema})")
    if a.max_generation_rounds < 1:
        errors.append("algorithm.max_generation_rounds must be >= 1")
    if not 0 <= a.overlong_buffer_tokens < r.max_response_tokens:
        errors.append(f"algorithm.overlong_buffer_tokens must be in [0, rollout.max_response_tokens) "
                      f"(got {a.overlong_buffer_tokens})")
    if a.dual_clip is not None and a.dual_clip <= 1:
        errors.append(f"algorithm.dual_clip must be > 1 (got {a.dual_clip})")
    rr = a.reference_reset
    if (rr.interval_steps or rr.kl_threshold or rr.plateau_evals) and a.kl_coef == 0:
        errors.append("algorithm.reference_reset needs a reference model: set algorithm.kl_coef > 0")
    if d.task == "file":
        from rlpipe.tasks.datasets import FORMATS, ON_BAD_ROW

        if not d.file:
            errors.append("data.task=file needs data.file")
        elif not Path(d.file).exists():
            errors.append(f"data.file={d.file} does not exist")
        if d.heldout_file and not Path(d.heldout_file).exists():
            errors.append(f"data.heldout_file={d.heldout_file} does not exist")
        errors += _choice("data.format", d.format, sorted(FORMATS))
        errors += _choice("data.on_bad_row", d.on_bad_row, list(ON_BAD_ROW))
        if d.format in FORMATS:
            kind = FORMATS[d.format].kind
            if cfg.verifier.name != kind and ":" not in cfg.verifier.name:
                errors.append(f"data.format={d.format} holds {kind} tasks: use verifier={kind} "
                              f"(got verifier.name={cfg.verifier.name})")
    elif d.task == "arithmetic" and cfg.verifier.name not in ("arithmetic",) and ":" not in cfg.verifier.name:
        errors.append(f"the arithmetic task is scored by verifier.name=arithmetic (got {cfg.verifier.name})")
    if t.save_every_steps < 0:
        errors.append("trainer.save_every_steps must be >= 0")
    if t.keep_checkpoints < 1:
        errors.append("trainer.keep_checkpoints must be >= 1")
    if errors:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))


def validated_or_exit(cfg: Config, prog: str, extra: Callable[[Config], list[str]] = lambda cfg: []) -> Config:
    """For command-line entry points: ``cfg`` if it passes ``validate`` and the command's own checks (``extra``
    returns error strings); otherwise print every error naming the fields and exit with status 2."""
    try:
        validate(cfg)
        errors = extra(cfg)
        if errors:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        sys.exit(2)
    return cfg
