"""Builders: config -> plain settings and keyword arguments. No role ever sees the root config."""

from __future__ import annotations

from typing import Optional

from rlpipe.config.schema import Config
from rlpipe.driver.collect import CollectSettings
from rlpipe.driver.resets import ResetPolicy
from rlpipe.driver.trainer import StepSettings
from rlpipe.errors import UserError
from rlpipe.learner.objective import ObjectiveSettings
from rlpipe.learner.lora import LoraSettings
from rlpipe.learner.settings import CorrectionSettings, OptimizerSettings
from rlpipe.rollout.types import SamplingSettings


def objective_settings(cfg: Config) -> ObjectiveSettings:
    a = cfg.algorithm
    return ObjectiveSettings(
        policy_loss=a.policy_loss,
        clip_low=a.clip_low,
        clip_high=a.clip_high,
        dual_clip=a.dual_clip,
        loss_aggregation=a.loss_aggregation,
        loss_constant=a.loss_constant if a.loss_constant is not None else float(cfg.rollout.max_response_tokens),
        kl_coef=a.kl_coef,
        kl_estimator=a.kl_estimator,
        kl_level=a.kl_level,
        kl_in_loss=a.kl_in == "loss",
        entropy_coef=a.entropy_coef,
        temperature=cfg.rollout.temperature,
    )


def optimizer_settings(cfg: Config) -> OptimizerSettings:
    lr = cfg.learner
    return OptimizerSettings(lr=lr.lr, betas=(lr.betas[0], lr.betas[1]), weight_decay=lr.weight_decay,
                             max_grad_norm=lr.max_grad_norm)


def lora_settings(cfg: Config) -> Optional[LoraSettings]:
    lora = cfg.model.lora
    if lora.rank <= 0:
        return None
    return LoraSettings(rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout,
                        target_modules=tuple(lora.target_modules), export_merged=lora.export_merged)


def correction_settings(cfg: Config) -> CorrectionSettings:
    a = cfg.algorithm
    return CorrectionSettings(mode=a.rollout_correction, threshold=a.rollout_correction_threshold,
                              level=a.rollout_correction_level)


def sampling_settings(cfg: Config) -> SamplingSettings:
    r = cfg.rollout
    return SamplingSettings(temperature=r.temperature, top_p=r.top_p, max_response_tokens=r.max_response_tokens,
                            thinking_budget_tokens=r.thinking_budget_tokens, answer_budget_tokens=r.answer_budget_tokens)


def collect_settings(cfg: Config) -> CollectSettings:
    a = cfg.algorithm
    return CollectSettings(
        prompts_per_step=cfg.data.prompts_per_step,
        samples_per_prompt=cfg.rollout.samples_per_prompt,
        sampling=sampling_settings(cfg),
        seed=cfg.trainer.seed,
        dynamic_sampling=a.dynamic_sampling,
        max_generation_rounds=a.max_generation_rounds,
        overlong_buffer_tokens=a.overlong_buffer_tokens,
        overlong_penalty=a.overlong_penalty,
        length_penalty=a.length_penalty,
        length_penalty_weight=a.length_penalty_weight,
        budget_reward=a.budget_reward,
        budget_reward_alpha=a.budget_reward_alpha,
        budget_reward_delta=a.budget_reward_delta,
        max_staleness_steps=cfg.trainer.max_staleness_steps,
    )


def advantage_options(cfg: Config) -> dict:
    options = {"eps": cfg.algorithm.advantage_eps}
    if cfg.algorithm.advantage == "agapo":
        options["all_wrong_advantage"] = cfg.algorithm.all_wrong_advantage
    return options


def step_settings(cfg: Config) -> StepSettings:
    a = cfg.algorithm
    return StepSettings(
        advantage=a.advantage,
        advantage_options=advantage_options(cfg),
        reward_kl_coef=a.kl_coef if a.kl_in == "reward" else 0.0,
        mask_truncated=a.mask_truncated,
    )


def reset_policy(cfg: Config) -> ResetPolicy:
    r = cfg.algorithm.reference_reset
    return ResetPolicy(interval_steps=r.interval_steps, kl_threshold=r.kl_threshold, plateau_evals=r.plateau_evals,
                       reset_optimizer=r.reset_optimizer)


def verifier_options(cfg: Config) -> dict:
    v = cfg.verifier
    rewards = dict(correct_reward=v.correct_reward, wrong_reward=v.wrong_reward, parse_fail_reward=v.wrong_reward)
    if v.name == "arithmetic":
        return rewards
    if v.name == "math":
        return dict(rewards, timeout_s=v.timeout_s, fallback=v.answer_fallback, format=v.format,
                    format_reward=v.format_reward)
    if v.name == "code":
        return dict(rewards, timeout_s=v.timeout_s)
    return {}


def head_specs(cfg: Config, model_path: str) -> list[tuple[str, object]]:
    """The auxiliary heads the learner ranks build, as (kind, settings) pairs: the score head(s) of
    ``model.score_head`` with their delimiter / think strings resolved to token ids; none when it is off."""
    h = cfg.model.score_head
    if not h.enabled:
        return []
    from transformers import AutoTokenizer

    from rlpipe.errors import ConfigError
    from rlpipe.learner.dense_head import DenseHeadSettings
    from rlpipe.learner.score_head import ScoreHeadSettings

    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def single_token(text: str, what: str) -> int:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ConfigError(f"model.score_head.{what} {text!r} is {len(ids)} tokens in {model_path}'s tokenizer "
                              f"({ids}); each must be exactly one token")
        return ids[0]

    think = [single_token(t, "think_tokens") for t in h.think_tokens]
    common = dict(delimiter_ids=tuple(single_token(d, "delimiters") for d in h.delimiters),
                  think_start_id=think[0] if think else None, think_end_id=think[1] if think else None,
                  layer=h.layer, grad_scale=h.grad_scale, positive_weight=h.positive_weight, coef=h.coef,
                  exclude_format_failures=h.exclude_format_failures)
    specs: list[tuple[str, object]] = []
    if h.kind in ("step", "both"):
        specs.append(("sprm", ScoreHeadSettings(**common, **h.settings_for("step"))))
    if h.kind in ("dense", "both"):
        specs.append(("dense_prm", DenseHeadSettings(**common, **h.settings_for("dense"), pooling=h.pooling,
                                                     width=h.width, features=tuple(h.features))))
    return specs


def model_dir(cfg: Config) -> str:
    """The policy's HF directory: ``model.path``, or the cached warm-started tiny model (built on first use)."""
    if cfg.model.path:
        return cfg.model.path
    from rlpipe.models.warmstart import warmstart

    t = cfg.model.tiny
    if cfg.data.mode != "none" and t.warmstart_steps > 0:
        raise UserError(f"data.mode={cfg.data.mode} needs a model that knows the modes: the tiny warm-start teaches "
                        f"the task without them. Train one with `rlpipe sft data.mode={cfg.data.mode}` and give its "
                        f"final_model as model.path (docs/modes.md)")
    task = "tool_arithmetic" if cfg.data.task == "tool_arithmetic" else "arithmetic"
    return str(warmstart(size=t.size, steps=t.warmstart_steps, lr=t.warmstart_lr, batch_size=t.warmstart_batch_size,
                         seed=t.seed, slip_rate=t.teacher_slip_rate, cache_dir=t.cache_dir,
                         think_tokens=cfg.data.mode != "none", task=task, tool_rate=t.teacher_tool_rate,
                         bad_call_rate=t.teacher_bad_call_rate))


def multi_turn_options(cfg: Config) -> Optional[dict]:
    """The rollout engines' multi-turn wrapper (rlpipe.rollout.multi_turn), or None for one-turn rollouts."""
    r = cfg.rollout
    if r.environment is None:
        return None
    options = dict(tools=list(r.tools), tool_options={k: dict(v) for k, v in r.tool_options.items()})
    return dict(environment=r.environment, environment_options=options, max_turns=r.max_turns,
                tool_workers=r.tool_workers)
