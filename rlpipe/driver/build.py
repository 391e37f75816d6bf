"""Builders: config -> plain keyword arguments -> roles. No role ever sees the root config."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rlpipe.config.schema import Config
from rlpipe.driver import cluster
from rlpipe.driver.groups import Group
from rlpipe.driver.pools import LearnerGroup, RolloutPool, VerifierPool
from rlpipe.driver.resets import ResetPolicy
from rlpipe.driver.trainer import StepSettings
from rlpipe.learner.objective import ObjectiveSettings
from rlpipe.learner.worker import OptimizerSettings
from rlpipe.rollout.types import SamplingSettings

log = logging.getLogger(__name__)


@dataclass
class Roles:
    rollout: RolloutPool
    verifiers: VerifierPool
    learner: LearnerGroup

    def shutdown(self) -> None:
        # Rollout first: in local mode an in-process vLLM engine uses process groups the learner owns.
        for g in (self.rollout.group, self.verifiers.group, self.learner.group):
            g.shutdown()


def actors_needed(cfg: Config) -> int:
    """Logical CPUs a locally started Ray instance needs for every role (oversubscribing 2 real cores is fine)."""
    return cfg.rollout.num_engines + cfg.verifier.num_workers + cfg.learner.num_workers


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


def sampling_settings(cfg: Config) -> SamplingSettings:
    r = cfg.rollout
    return SamplingSettings(temperature=r.temperature, top_p=r.top_p, max_response_tokens=r.max_response_tokens)


def check_cluster_resources(cfg: Config) -> None:
    """Fail at once, with the numbers, when the Ray cluster is too small for the roles (instead of waiting for a
    placement group that can never be placed until cluster.call_timeout_s runs out)."""
    import ray

    have = ray.cluster_resources()
    need_cpus = actors_needed(cfg)
    problems = []
    if have.get("CPU", 0) < need_cpus:
        problems.append(f"{need_cpus} logical CPUs (one per rollout engine, verifier and learner rank: "
                        f"{cfg.rollout.num_engines} + {cfg.verifier.num_workers} + {cfg.learner.num_workers}), "
                        f"the cluster has {have.get('CPU', 0):g}")
    if have.get("GPU", 0) > 0:
        share = cluster.COLOCATED_GPU_SHARE if cfg.cluster.placement == "colocated" else 1.0
        need_gpus = share * (cfg.learner.num_workers + cfg.rollout.num_engines)
        if have["GPU"] < need_gpus:
            problems.append(f"{need_gpus:g} GPUs (learner ranks + rollout engines, cluster.placement="
                            f"{cfg.cluster.placement}), the cluster has {have['GPU']:g}")
    if problems:
        raise RuntimeError("the Ray cluster is too small for this run: it needs " + "; and ".join(problems) +
                           ". Start Ray with more logical CPUs (ray start --num-cpus=N) or run fewer workers.")


def build_roles(cfg: Config, model_path: str, max_model_len: int) -> Roles:
    if cfg.cluster.mode == "ray":
        check_cluster_resources(cfg)
    # Learner ranks first: their placement group is the scarcest resource.
    learner = build_learner(cfg, model_path)
    roles = Roles(build_rollout(cfg, model_path, max_model_len), build_verifiers(cfg), learner)
    if cfg.cluster.mode == "ray":  # which process is which, for whoever has to read a crash report or a top
        log.info("worker pids: learner ranks %s, rollout engines %s, verifiers %s", learner.group.pids(),
                 roles.rollout.group.pids(), roles.verifiers.group.pids())
    return roles


def build_learner(cfg: Config, model_path: str, score_head=None) -> LearnerGroup:
    """The learner ranks. ``score_head`` (ScoreHeadSettings) overrides model.score_head (the evaluator passes the
    settings a trained head was saved with)."""
    mode, timeout = cfg.cluster.mode, cfg.cluster.call_timeout_s
    n = cfg.learner.num_workers
    options = (cluster.learner_actor_options(n, cfg.cluster.learner_placement_strategy, timeout, cfg.cluster.placement)
               if mode == "ray" else ())
    group = Group("learner", mode, n, options, timeout)
    master_addr, master_port = group.rendezvous_address()
    common = dict(
        world_size=n,
        master_addr=master_addr,
        master_port=master_port,
        model_path=model_path,
        backend=cfg.learner.backend,
        optimizer=OptimizerSettings(
            lr=cfg.learner.lr,
            betas=tuple(cfg.learner.betas),
            weight_decay=cfg.learner.weight_decay,
            max_grad_norm=cfg.learner.max_grad_norm,
        ),
        objective=objective_settings(cfg),
        micro_batch_samples=cfg.learner.micro_batch_samples,
        with_reference=cfg.algorithm.kl_coef > 0,
        seed=cfg.trainer.seed,
        dtype=cfg.model.dtype,
        dist_timeout_s=timeout,
        score_head=score_head if score_head is not None else score_head_settings(cfg, model_path),
        backend_options=(dict(zero_stage=cfg.learner.deepspeed.zero_stage,
                              offload_optimizer=cfg.learner.deepspeed.offload_optimizer)
                         if cfg.learner.backend == "deepspeed" else {}),
    )
    group.construct("rlpipe.learner.worker:LearnerWorker", [dict(common, rank=i) for i in range(n)])
    return LearnerGroup(group, cfg.learner.updates_per_step)


def score_head_settings(cfg: Config, model_path: str):
    """The SPRM head's settings with its delimiter / think strings resolved to token ids, or None when it is off."""
    h = cfg.model.score_head
    if not h.enabled:
        return None
    from transformers import AutoTokenizer

    from rlpipe.learner.score_head import ScoreHeadSettings

    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def single_token(text: str, what: str) -> int:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"model.score_head.{what} {text!r} is {len(ids)} tokens in {model_path}'s tokenizer "
                             f"({ids}); each must be exactly one token")
        return ids[0]

    think = [single_token(t, "think_tokens") for t in h.think_tokens]
    if think and len(think) != 2:
        raise ValueError("model.score_head.think_tokens must be [<think>, </think>] or empty")
    return ScoreHeadSettings(
        delimiter_ids=tuple(single_token(d, "delimiters") for d in h.delimiters),
        think_start_id=think[0] if think else None, think_end_id=think[1] if think else None,
        layer=h.layer, lr=h.lr, grad_scale=h.grad_scale, positive_weight=h.positive_weight, coef=h.coef,
        dropout=h.dropout, agreement_filter=h.agreement_filter)


def build_rollout(cfg: Config, model_path: str, max_model_len: int) -> RolloutPool:
    mode, r = cfg.cluster.mode, cfg.rollout
    gpus = cluster.gpus_per_rollout_engine(cfg.cluster.placement) if mode == "ray" else 0
    restarts = cfg.cluster.max_actor_restarts
    options = cluster.role_actor_options(r.num_engines, gpus=gpus, max_restarts=restarts) if mode == "ray" else ()
    group = Group("rollout", mode, r.num_engines, options, cfg.cluster.call_timeout_s, restartable=True)
    group.construct("rlpipe.rollout:build_engine", [
        dict(engine=r.engine, model_path=model_path, seed=cfg.trainer.seed + i, dtype=cfg.model.dtype,
             max_model_len=max_model_len, kv_cache_bytes=r.kv_cache_bytes,
             gpu_memory_utilization=r.gpu_memory_utilization, enforce_eager=r.enforce_eager)
        for i in range(r.num_engines)
    ])
    return RolloutPool(group)


def build_verifiers(cfg: Config) -> VerifierPool:
    mode, v = cfg.cluster.mode, cfg.verifier
    options = (cluster.role_actor_options(v.num_workers, max_restarts=cfg.cluster.max_actor_restarts)
               if mode == "ray" else ())
    group = Group("verifier", mode, v.num_workers, options, cfg.cluster.call_timeout_s, restartable=True)
    group.construct("rlpipe.verify.worker:VerifierWorker",
                    [dict(name=v.name, options=verifier_options(cfg))] * v.num_workers)
    return VerifierPool(group, v.max_retries)


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


def advantage_options(cfg: Config) -> dict:
    options = {"eps": cfg.algorithm.advantage_eps}
    if cfg.algorithm.advantage == "agapo":
        options["all_wrong_advantage"] = cfg.algorithm.all_wrong_advantage
    return options


def reset_policy(cfg: Config) -> ResetPolicy:
    r = cfg.algorithm.reference_reset
    return ResetPolicy(interval_steps=r.interval_steps, kl_threshold=r.kl_threshold, plateau_evals=r.plateau_evals,
                       reset_optimizer=r.reset_optimizer)


def step_settings(cfg: Config) -> StepSettings:
    a = cfg.algorithm
    return StepSettings(
        prompts_per_step=cfg.data.prompts_per_step,
        samples_per_prompt=cfg.rollout.samples_per_prompt,
        sampling=sampling_settings(cfg),
        advantage=a.advantage,
        advantage_options=advantage_options(cfg),
        kl_coef=a.kl_coef,
        kl_estimator=a.kl_estimator,
        kl_in_reward=a.kl_in == "reward",
        seed=cfg.trainer.seed,
        dynamic_sampling=a.dynamic_sampling,
        max_generation_rounds=a.max_generation_rounds,
        overlong_buffer_tokens=a.overlong_buffer_tokens,
        overlong_penalty=a.overlong_penalty,
        mask_truncated=a.mask_truncated,
        colocated=cfg.cluster.placement == "colocated",
        sprm_exclude_format_failures=cfg.model.score_head.exclude_format_failures,
    )


def model_dir(cfg: Config) -> str:
    """The policy's HF directory: ``model.path``, or the cached warm-started tiny model (built on first use)."""
    if cfg.model.path:
        return cfg.model.path
    from rlpipe.models.warmstart import warmstart

    t = cfg.model.tiny
    return str(warmstart(size=t.size, steps=t.warmstart_steps, lr=t.warmstart_lr, batch_size=t.warmstart_batch_size,
                         seed=t.seed, slip_rate=t.teacher_slip_rate, cache_dir=t.cache_dir))


