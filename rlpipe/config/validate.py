"""Checks that need more than a type: run once, before Ray or any actor starts. Every problem is listed at once,
each naming its field; valid names come from the registries the code itself uses.

The config is frozen after validation (``Config.freeze``): nothing downstream changes it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterable

from rlpipe.config.schema import Config
from rlpipe.errors import ConfigError

LOCAL_ROLES_HINT = "`cluster=local` selects it"


def _choice(field: str, value, valid: Iterable) -> list[str]:
    valid = sorted(valid)
    return [] if value in valid else [f"{field}={value!r} is not one of {valid}"]


def _at_least(field: str, value, low, *, strict: bool = False) -> list[str]:
    ok = value > low if strict else value >= low
    return [] if ok else [f"{field} must be {'>' if strict else '>='} {low} (got {value})"]


def _in_range(field: str, value, low, high, *, high_open: bool = False) -> list[str]:
    ok = low <= value < high if high_open else low <= value <= high
    return [] if ok else [f"{field} must be in [{low}, {high}{')' if high_open else ']'} (got {value})"]


def _existing(field: str, path, *, directory: bool = False) -> list[str]:
    if path is None:
        return []
    p = Path(path)
    if directory and not p.is_dir():
        return [f"{field}={path}: no such directory"]
    if not directory and not p.exists():
        return [f"{field}={path} does not exist"]
    return []


def validate(cfg: Config) -> None:
    errors = (_model(cfg) + _data(cfg) + _algorithm(cfg) + _rollout(cfg) + _learner(cfg) + _verifier(cfg)
              + _cluster(cfg) + _logger(cfg) + _trainer(cfg) + _evaluation(cfg) + _stages(cfg))
    if errors:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))


def _model(cfg: Config) -> list[str]:
    from rlpipe.models.tiny import SIZES

    m, t, h = cfg.model, cfg.model.tiny, cfg.model.score_head
    errors = _choice("model.dtype", m.dtype, ["float32", "bfloat16"])
    if m.path:
        errors += _existing("model.path", m.path, directory=True)
        if not errors and not (Path(m.path) / "config.json").is_file():
            errors.append(f"model.path={m.path}: not a Hugging Face model directory (no config.json; models are "
                          f"not downloaded)")
    else:
        errors += _choice("model.tiny.size", t.size, SIZES)
        errors += _at_least("model.tiny.warmstart_steps", t.warmstart_steps, 0)
        errors += _at_least("model.tiny.warmstart_lr", t.warmstart_lr, 0, strict=True)
        errors += _at_least("model.tiny.warmstart_batch_size", t.warmstart_batch_size, 1)
        errors += _in_range("model.tiny.teacher_slip_rate", t.teacher_slip_rate, 0, 1)
    if h.enabled:
        if not h.delimiters:
            errors.append("model.score_head.delimiters must name at least one step delimiter")
        if len(h.think_tokens) not in (0, 2):
            errors.append(f"model.score_head.think_tokens must be [<think>, </think>] or empty (got {h.think_tokens})")
        errors += _choice("model.score_head.kind", h.kind, ["step", "dense", "both"])
        if h.lr is not None:
            errors += _at_least("model.score_head.lr", h.lr, 0, strict=True)
        errors += _at_least("model.score_head.grad_scale", h.grad_scale, 0)
        errors += _at_least("model.score_head.positive_weight", h.positive_weight, 0, strict=True)
        errors += _at_least("model.score_head.coef", h.coef, 0)
        if h.dropout is not None:
            errors += _in_range("model.score_head.dropout", h.dropout, 0, 1, high_open=True)
        if h.kind != "step":
            from rlpipe.algos.dense_prm import FEATURES, POOLINGS

            errors += _choice("model.score_head.pooling", h.pooling, list(POOLINGS))
            errors += _at_least("model.score_head.width", h.width, 1)
            bad = [f for f in h.features if f not in FEATURES]
            if bad or not h.features:
                errors.append(f"model.score_head.features must be a non-empty subset of {list(FEATURES)} "
                              f"(got {list(h.features)})")
    return errors + _lora(cfg)


def _lora(cfg: Config) -> list[str]:
    lora = cfg.model.lora
    errors = _at_least("model.lora.rank", lora.rank, 0)
    if lora.rank <= 0:
        return errors
    errors += _at_least("model.lora.alpha", lora.alpha, 0, strict=True)
    errors += _in_range("model.lora.dropout", lora.dropout, 0, 1, high_open=True)
    if not lora.target_modules:
        errors.append("model.lora.target_modules must name at least one linear layer (e.g. q_proj)")
    r = cfg.algorithm.reference_reset
    if r.interval_steps or r.kl_threshold or r.plateau_evals:
        errors.append("model.lora: the KL reference is the base model, which a reference reset cannot move; turn "
                      "algorithm.reference_reset off")
    if importlib.util.find_spec("peft") is None:  # looked up, not imported (peft imports transformers)
        errors.append(f"model.lora.rank={lora.rank} needs peft: pip install 'rlpipe[lora]'")
    return errors


def _data(cfg: Config) -> list[str]:
    from rlpipe.algos.length_shaping import LENGTH_PENALTIES
    from rlpipe.driver.prompts import SAMPLERS
    from rlpipe.tasks.datasets import FORMATS, ON_BAD_ROW
    from rlpipe.tasks.modes import DATA_MODES

    d = cfg.data
    errors = _choice("data.task", d.task, ["arithmetic", "tool_arithmetic", "file"])
    errors += _at_least("data.prompts_per_step", d.prompts_per_step, 1)
    errors += _at_least("data.heldout_size", d.heldout_size, 1)
    errors += _at_least("data.max_prompt_tokens", d.max_prompt_tokens, 1)
    errors += _at_least("data.pool_size", d.pool_size, 0)
    if 0 < d.pool_size < d.prompts_per_step:
        errors.append(f"data.pool_size={d.pool_size} is smaller than data.prompts_per_step={d.prompts_per_step}: "
                      f"a step never holds one prompt twice")
    errors += _choice("data.sampler", d.sampler, SAMPLERS)
    if (d.sampler == "curriculum" or d.pass_rate_table) and d.pool_size == 0 and d.task != "file":
        errors.append("data.sampler=curriculum and data.pass_rate_table need a fixed pool: set data.pool_size > 0 "
                      "(a data file is a fixed pool already)")
    if not 0 <= d.pass_rate_min <= d.pass_rate_max <= 1:
        errors.append(f"need 0 <= data.pass_rate_min <= data.pass_rate_max <= 1 "
                      f"(got {d.pass_rate_min}, {d.pass_rate_max})")
    if not 0 < d.curriculum_ema <= 1:
        errors.append(f"data.curriculum_ema must be in (0, 1] (got {d.curriculum_ema})")
    errors += _existing("data.pass_rate_table", d.pass_rate_table)
    errors += _choice("data.on_bad_row", d.on_bad_row, ON_BAD_ROW)
    errors += _choice("data.mode", d.mode, DATA_MODES)
    if any(not isinstance(b, int) or b < 1 for b in d.stated_budget_tokens):
        errors.append(f"data.stated_budget_tokens must hold token counts >= 1 (got {d.stated_budget_tokens})")
    errors += _choice("algorithm.budget_reward", cfg.algorithm.budget_reward, ["none", "exact", "max"])
    errors += _choice("algorithm.length_penalty", cfg.algorithm.length_penalty, LENGTH_PENALTIES)
    if cfg.algorithm.budget_reward != "none" and not d.stated_budget_tokens:
        errors.append(f"algorithm.budget_reward={cfg.algorithm.budget_reward} needs prompts that state a budget: "
                      f"set data.stated_budget_tokens")
    if d.reasoning_ratio < 0:
        errors.append(f"data.reasoning_ratio must be >= 0 (got {d.reasoning_ratio})")
    if not d.operations or any(not isinstance(k, int) or not 1 <= k <= 8 for k in d.operations):
        errors.append(f"data.operations must be a non-empty list of operation counts in 1..8 (got {d.operations})")
    for key, value in d.fields.items():
        if not isinstance(value, str) or not value:
            errors.append(f"data.fields.{key} must name a field of the data file (got {value!r})")
    if d.quarantine_file and Path(d.quarantine_file).is_dir():
        errors.append(f"data.quarantine_file={d.quarantine_file} is a directory; give a file path")
    if d.task == "file":
        if not d.file:
            errors.append("data.task=file needs data.file")
        errors += _existing("data.file", d.file)
        errors += _existing("data.heldout_file", d.heldout_file)
        errors += _choice("data.format", d.format, FORMATS)
        if d.format in FORMATS:
            kind = FORMATS[d.format].kind
            if cfg.verifier.name != kind and ":" not in cfg.verifier.name:
                errors.append(f"data.format={d.format} holds {kind} tasks: use verifier={kind} "
                              f"(got verifier.name={cfg.verifier.name})")
    elif d.task in ("arithmetic", "tool_arithmetic"):
        if cfg.verifier.name != "arithmetic" and ":" not in cfg.verifier.name:
            errors.append(f"the {d.task} task is scored by verifier.name=arithmetic (got {cfg.verifier.name})")
        for field, value in (("data.file", d.file), ("data.heldout_file", d.heldout_file)):
            if value:
                errors.append(f"{field} is set but data.task={d.task} does not read it (use data.task=file or a "
                              f"data preset such as data=gsm8k)")
    if d.task == "tool_arithmetic" and d.mode != "none":
        errors.append(f"data.task=tool_arithmetic has no reasoning modes (got data.mode={d.mode})")
    return errors


def _algorithm(cfg: Config) -> list[str]:
    from rlpipe.algos.advantages import ADVANTAGE_ESTIMATORS
    from rlpipe.algos.aggregation import AGGREGATIONS
    from rlpipe.algos.kl import KL_ESTIMATORS, KL_LEVELS
    from rlpipe.algos.offpolicy import CORRECTIONS, LEVELS
    from rlpipe.algos.policy_loss import POLICY_LOSSES
    from rlpipe.learner.backend import OLD_LOGPROBS

    a, rr = cfg.algorithm, cfg.algorithm.reference_reset
    errors = _choice("algorithm.advantage", a.advantage, ADVANTAGE_ESTIMATORS.names())
    errors += _choice("algorithm.policy_loss", a.policy_loss, POLICY_LOSSES.names())
    errors += _choice("algorithm.loss_aggregation", a.loss_aggregation, AGGREGATIONS)
    errors += _choice("algorithm.kl_estimator", a.kl_estimator, KL_ESTIMATORS)
    errors += _choice("algorithm.kl_level", a.kl_level, KL_LEVELS)
    errors += _choice("algorithm.kl_in", a.kl_in, ["loss", "reward"])
    errors += _choice("algorithm.old_logprobs", a.old_logprobs, OLD_LOGPROBS)
    if a.old_logprobs == "rollout" and cfg.model.dtype != "float32":
        errors.append(f"algorithm.old_logprobs=rollout needs model.dtype=float32: in {cfg.model.dtype} the engine's "
                      f"and the learner's logprobs differ (different kernels and rounding), so the engine's are not "
                      f"the learner's old policy; use algorithm.old_logprobs=recompute")
    errors += _choice("algorithm.rollout_correction", a.rollout_correction, CORRECTIONS)
    errors += _choice("algorithm.rollout_correction_level", a.rollout_correction_level, LEVELS)
    errors += _at_least("algorithm.rollout_correction_threshold", a.rollout_correction_threshold, 1, strict=True)
    if a.rollout_correction != "none" and a.old_logprobs == "rollout":
        errors.append(f"algorithm.rollout_correction={a.rollout_correction} weighs the engine's logprobs against the "
                      f"learner's recomputed ones: it needs algorithm.old_logprobs=recompute")
    if a.rollout_correction == "decoupled" and a.rollout_correction_level != "token":
        errors.append("algorithm.rollout_correction=decoupled is token-level (algorithm.rollout_correction_level="
                      "token)")
    errors += _in_range("algorithm.clip_low", a.clip_low, 0, 1, high_open=True)
    errors += _at_least("algorithm.clip_high", a.clip_high, 0)
    if a.dual_clip is not None and a.dual_clip <= 1:
        errors.append(f"algorithm.dual_clip must be > 1 (got {a.dual_clip})")
    if a.loss_constant is not None and a.loss_constant <= 0:
        errors.append(f"algorithm.loss_constant must be > 0 (got {a.loss_constant})")
    errors += _at_least("algorithm.kl_coef", a.kl_coef, 0)
    errors += _at_least("algorithm.entropy_coef", a.entropy_coef, 0)
    errors += _at_least("algorithm.advantage_eps", a.advantage_eps, 0, strict=True)
    errors += _at_least("algorithm.max_generation_rounds", a.max_generation_rounds, 1)
    if not 0 <= a.overlong_buffer_tokens < cfg.rollout.max_response_tokens:
        errors.append(f"algorithm.overlong_buffer_tokens must be in [0, rollout.max_response_tokens) "
                      f"(got {a.overlong_buffer_tokens})")
    errors += _at_least("algorithm.overlong_penalty", a.overlong_penalty, 0)
    errors += _at_least("algorithm.reference_reset.interval_steps", rr.interval_steps, 0)
    errors += _at_least("algorithm.reference_reset.kl_threshold", rr.kl_threshold, 0)
    errors += _at_least("algorithm.reference_reset.plateau_evals", rr.plateau_evals, 0)
    if (rr.interval_steps or rr.kl_threshold or rr.plateau_evals) and a.kl_coef == 0:
        errors.append("algorithm.reference_reset needs a reference model: set algorithm.kl_coef > 0")
    return errors


def _rollout(cfg: Config) -> list[str]:
    from rlpipe.rollout import ENGINES

    r = cfg.rollout
    errors = _choice("rollout.engine", r.engine, ENGINES)
    errors += _at_least("rollout.num_engines", r.num_engines, 1)
    if r.thinking_budget_tokens is not None:
        errors += _at_least("rollout.thinking_budget_tokens", r.thinking_budget_tokens, 0)
    errors += _at_least("rollout.answer_budget_tokens", r.answer_budget_tokens, 1)
    for b in cfg.eval.thinking_budgets:
        if not isinstance(b, int) or b < 0:
            errors.append(f"eval.thinking_budgets must hold token counts >= 0 (got {b!r})")
    if r.samples_per_prompt < 2:
        errors.append(f"rollout.samples_per_prompt must be >= 2 (got {r.samples_per_prompt}): advantages are "
                      f"relative to the other samples of the same prompt")
    if r.temperature <= 0:
        errors.append(f"rollout.temperature must be > 0 for training rollouts (got {r.temperature}): greedy "
                      f"samples of one prompt are identical and carry no signal")
    if not 0 < r.top_p <= 1:
        errors.append(f"rollout.top_p must be in (0, 1] (got {r.top_p})")
    errors += _at_least("rollout.max_response_tokens", r.max_response_tokens, 1)
    errors += _at_least("rollout.kv_cache_bytes", r.kv_cache_bytes, 1 << 20)
    if not 0 < r.gpu_memory_utilization <= 1:
        errors.append(f"rollout.gpu_memory_utilization must be in (0, 1] (got {r.gpu_memory_utilization})")
    return errors + _multi_turn(cfg)


def _multi_turn(cfg: Config) -> list[str]:
    from rlpipe.agents.env import ENVIRONMENTS
    from rlpipe.agents.tools import tool_names

    r = cfg.rollout
    if r.environment is None:
        if r.tools:
            return [f"rollout.tools={list(r.tools)} needs rollout.environment=tools (multi-turn rollouts)"]
        return ["data.task=tool_arithmetic needs rollout.environment=tools (use the preset: data=tool_arithmetic)"] \
            if cfg.data.task == "tool_arithmetic" else []
    errors = [] if ":" in r.environment else _choice("rollout.environment", r.environment, ENVIRONMENTS.names())
    errors += [f"rollout.tools: unknown tool {t!r}; valid: {', '.join(tool_names())} (or a 'package.module:Class')"
               for t in r.tools if ":" not in t and t not in tool_names()]
    errors += [f"rollout.tool_options.{t} is set but {t} is not in rollout.tools" for t in r.tool_options
               if t not in r.tools]
    if r.environment == "tools" and not r.tools:
        errors.append("rollout.environment=tools needs at least one tool in rollout.tools")
    if cfg.data.task == "tool_arithmetic":  # the task declares the tools its problems need
        from rlpipe.tasks.tool_arithmetic import TOOLS

        missing = [t for t in TOOLS if t not in r.tools]
        if missing:
            errors.append(f"data.task=tool_arithmetic needs the tools {list(TOOLS)}: rollout.tools={list(r.tools)} "
                          f"lacks {missing}")
    errors += _at_least("rollout.max_turns", r.max_turns, 1)
    errors += _at_least("rollout.tool_workers", r.tool_workers, 1)
    if r.thinking_budget_tokens is not None:
        errors.append("rollout.thinking_budget_tokens does not apply to multi-turn rollouts (rollout.environment)")
    return errors


def _learner(cfg: Config) -> list[str]:
    from rlpipe.learner.backend import BACKENDS, ZERO_STAGES
    from rlpipe.learner.packing import PACKING_MODES

    lr = cfg.learner
    errors = _choice("learner.backend", lr.backend, BACKENDS)
    errors += _choice("learner.deepspeed.zero_stage", lr.deepspeed.zero_stage, ZERO_STAGES)
    if lr.deepspeed.offload_optimizer and lr.backend != "deepspeed":
        errors.append("learner.deepspeed.offload_optimizer needs learner.backend=deepspeed")
    errors += _at_least("learner.num_workers", lr.num_workers, 1)
    errors += _at_least("learner.threads_per_rank", lr.threads_per_rank, 1)
    errors += _at_least("learner.lr", lr.lr, 0, strict=True)
    errors += _at_least("learner.weight_decay", lr.weight_decay, 0)
    if len(lr.betas) != 2 or not all(0 <= b < 1 for b in lr.betas):
        errors.append(f"learner.betas must be two numbers in [0, 1) (got {list(lr.betas)})")
    errors += _at_least("learner.max_grad_norm", lr.max_grad_norm, 0)
    errors += _at_least("learner.updates_per_step", lr.updates_per_step, 1)
    errors += _at_least("learner.micro_batch_samples", lr.micro_batch_samples, 1)
    if lr.max_tokens_per_micro_batch is not None:
        errors += _at_least("learner.max_tokens_per_micro_batch", lr.max_tokens_per_micro_batch, 1)
    errors += _choice("learner.packing", lr.packing, PACKING_MODES)
    samples = cfg.data.prompts_per_step * cfg.rollout.samples_per_prompt
    if samples < lr.num_workers:
        errors.append("data.prompts_per_step * rollout.samples_per_prompt must be >= learner.num_workers")
    if lr.updates_per_step > samples:
        errors.append(f"learner.updates_per_step={lr.updates_per_step} is more than the {samples} samples of a step")
    return errors


def _verifier(cfg: Config) -> list[str]:
    from rlpipe.verify.batch_scorer import BUILTIN_VERIFIERS
    from rlpipe.verify.math_answer import FALLBACKS, THINK_FORMATS

    v = cfg.verifier
    errors = []
    if ":" in v.name:
        module, _, attr = v.name.partition(":")
        if not module or not attr:
            errors.append(f"verifier.name={v.name!r}: a user verifier is named 'package.module:Class'")
    else:
        errors += _choice("verifier.name", v.name, BUILTIN_VERIFIERS)
    errors += _at_least("verifier.num_workers", v.num_workers, 1)
    errors += _at_least("verifier.max_retries", v.max_retries, 0)
    errors += _at_least("verifier.timeout_s", v.timeout_s, 0, strict=True)
    errors += _choice("verifier.answer_fallback", v.answer_fallback, FALLBACKS)
    errors += _choice("verifier.format", v.format, THINK_FORMATS)
    if v.correct_reward <= v.wrong_reward:
        errors.append(f"verifier.correct_reward ({v.correct_reward}) must be above verifier.wrong_reward "
                      f"({v.wrong_reward})")
    return errors


def _cluster(cfg: Config) -> list[str]:
    c, r, lr = cfg.cluster, cfg.rollout, cfg.learner
    errors = _choice("cluster.mode", c.mode, ["ray", "local"])
    errors += _choice("cluster.placement", c.placement, ["colocated", "split"])
    errors += _choice("cluster.learner_placement_strategy", c.learner_placement_strategy,
                      ["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"])
    errors += _at_least("cluster.call_timeout_s", c.call_timeout_s, 0, strict=True)
    errors += _at_least("cluster.max_actor_restarts", c.max_actor_restarts, 0)
    if c.mode == "local" and lr.num_workers != 1:
        errors.append(f"cluster.mode=local runs everything in one process, so learner.num_workers must be 1 "
                      f"(got {lr.num_workers}); {LOCAL_ROLES_HINT}")
    if c.mode == "local" and (r.num_engines != 1 or cfg.verifier.num_workers != 1):
        errors.append("cluster.mode=local runs one rollout engine and one verifier (rollout.num_engines=1, "
                      f"verifier.num_workers=1); {LOCAL_ROLES_HINT}")
    return errors


def _logger(cfg: Config) -> list[str]:
    from rlpipe.reporting.sinks import SINK_NAMES, WANDB_MODES

    g = cfg.logger
    errors = [f"logger.backends: {name!r} is not one of {sorted(SINK_NAMES)}" for name in g.backends
              if name not in SINK_NAMES]
    return errors + _choice("logger.wandb_mode", g.wandb_mode, WANDB_MODES)


def _trainer(cfg: Config) -> list[str]:
    t = cfg.trainer
    errors = _at_least("trainer.total_steps", t.total_steps, 1)
    errors += _at_least("trainer.max_staleness_steps", t.max_staleness_steps, 0)
    if t.max_staleness_steps > 0 and cfg.cluster.placement == "colocated":
        errors.append("trainer.max_staleness_steps > 0 needs cluster.placement=split: colocated engines sleep while "
                      "the learner trains, so they cannot generate ahead")
    errors += _at_least("trainer.eval_every_steps", t.eval_every_steps, 1)
    errors += _at_least("trainer.save_every_steps", t.save_every_steps, 0)
    errors += _at_least("trainer.keep_checkpoints", t.keep_checkpoints, 1)
    if not t.output_dir:
        errors.append("trainer.output_dir must name a directory")
    elif Path(t.output_dir).exists() and not Path(t.output_dir).is_dir():
        errors.append(f"trainer.output_dir={t.output_dir} is a file, not a directory")
    if t.resume not in ("auto", "never") and not Path(t.resume).is_dir():
        errors.append(f"trainer.resume={t.resume}: no such checkpoint directory (or use auto / never)")
    return errors


def _evaluation(cfg: Config) -> list[str]:
    e = cfg.eval
    errors = _at_least("prepass.samples_per_prompt", cfg.prepass.samples_per_prompt, 1)
    errors += _at_least("eval.samples_per_prompt", e.samples_per_prompt, 1)
    for field, values in (("eval.pass_k", e.pass_k), ("eval.maj_k", e.maj_k), ("eval.best_of", e.best_of),
                          ("eval.budgets", e.budgets)):
        errors += [f"{field} values must be >= 1 (got {v})" for v in values if v < 1]
    return errors


def _stages(cfg: Config) -> list[str]:
    from rlpipe.algos.preference import PREFERENCE_LOSSES
    from rlpipe.tasks.preference_pairs import REJECTION_RULES

    errors: list[str] = []
    for name, f in (("sft", cfg.sft), ("prefer", cfg.prefer)):
        errors += _existing(f"{name}.train_file", f.train_file) + _existing(f"{name}.heldout_file", f.heldout_file)
        errors += _at_least(f"{name}.heldout_rows", f.heldout_rows, 0)
        errors += _at_least(f"{name}.total_steps", f.total_steps, 1)
        errors += _at_least(f"{name}.lr", f.lr, 0, strict=True)
        errors += _in_range(f"{name}.warmup_ratio", f.warmup_ratio, 0, 1)
        errors += _in_range(f"{name}.min_lr_ratio", f.min_lr_ratio, 0, 1)
        errors += _at_least(f"{name}.max_seq_tokens", f.max_seq_tokens, 2)
        errors += _at_least(f"{name}.eval_every_steps", f.eval_every_steps, 1)
    s, p = cfg.sft, cfg.prefer
    errors += _in_range("sft.teacher_recheck_rate", s.teacher_recheck_rate, 0, 1)
    errors += _at_least("sft.teacher_rows", s.teacher_rows, 1) + _at_least("sft.rows_per_step", s.rows_per_step, 1)
    errors += _choice("prefer.loss", p.loss, PREFERENCE_LOSSES.names())
    errors += _choice("prefer.rejected", p.rejected, REJECTION_RULES)
    errors += _at_least("prefer.beta", p.beta, 0, strict=True)
    errors += _in_range("prefer.label_smoothing", p.label_smoothing, 0, 0.5, high_open=True)
    if p.label_smoothing and p.loss != "dpo":
        errors.append(f"prefer.label_smoothing is DPO's; prefer.loss={p.loss} takes none")
    errors += _at_least("prefer.pairs_per_step", p.pairs_per_step, 1)
    errors += _at_least("prefer.prompts_per_step", p.prompts_per_step, 1)
    errors += _at_least("prefer.samples_per_prompt", p.samples_per_prompt, 2)
    errors += _at_least("prefer.min_length_ratio", p.min_length_ratio, 1)
    if not cfg.pipeline.stages:
        errors.append("pipeline.stages must name at least one stage")
    errors += [f"pipeline.stages: {name!r} is not one of ['prefer', 'rl', 'sft']" for name in cfg.pipeline.stages
               if name not in ("sft", "rl", "prefer")]
    return errors
