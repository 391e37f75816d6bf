"""Builders: config -> plain keyword arguments -> roles. No role ever sees the root config."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from rlpipe.config.schema import Config
from rlpipe.driver import cluster
from rlpipe.driver.groups import Group
from rlpipe.driver.pools import LearnerGroup, RolloutPool, VerifierPool
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


def build_roles(cfg: Config, model_path: str, max_model_len: int) -> Roles:
    mode, timeout = cfg.cluster.mode, cfg.cluster.call_timeout_s
    ray_mode = mode == "ray"
    gpus = ray_mode and cluster.cluster_has_gpus()

    # Learner ranks first: their placement group is the scarcest resource.
    n = cfg.learner.num_workers
    learner_opts = cluster.learner_actor_options(n, cfg.cluster.learner_placement_strategy, timeout) if ray_mode else ()
    learner = Group("learner", mode, n, learner_opts, timeout)
    master_addr, master_port = learner.rendezvous_address()
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
    )
    learner.construct("rlpipe.learner.worker:LearnerWorker", [dict(common, rank=i) for i in range(n)])

    engines = cfg.rollout.num_engines
    rollout = Group("rollout", mode, engines,
                    cluster.role_actor_options(engines, gpus=1 if gpus else 0) if ray_mode else (), timeout)
    r = cfg.rollout
    rollout.construct("rlpipe.rollout:build_engine", [
        dict(engine=r.engine, model_path=model_path, seed=cfg.trainer.seed + i, dtype=cfg.model.dtype,
             max_model_len=max_model_len, kv_cache_bytes=r.kv_cache_bytes,
             gpu_memory_utilization=r.gpu_memory_utilization, enforce_eager=r.enforce_eager)
        for i in range(engines)
    ])

    v = cfg.verifier
    verifiers = Group("verifier", mode, v.num_workers,
                      cluster.role_actor_options(v.num_workers) if ray_mode else (), timeout)
    options = verifier_options(cfg)
    verifiers.construct("rlpipe.verify.worker:VerifierWorker", [dict(name=v.name, options=options)] * v.num_workers)
    return Roles(RolloutPool(rollout), VerifierPool(verifiers, v.max_retries), LearnerGroup(learner,
                                                                                             cfg.learner.updates_per_step))


def verifier_options(cfg: Config) -> dict:
    v = cfg.verifier
    if v.name == "arithmetic":
        return dict(correct_reward=v.correct_reward, wrong_reward=v.wrong_reward, parse_fail_reward=v.wrong_reward)
    return {}


def advantage_options(cfg: Config) -> dict:
    return {"eps": cfg.algorithm.advantage_eps}


def model_dir(cfg: Config) -> str:
    """The policy's HF directory: ``model.path``, or the cached warm-started tiny model (built on first use)."""
    if cfg.model.path:
        return cfg.model.path
    from rlpipe.models.warmstart import warmstart

    t = cfg.model.tiny
    return str(warmstart(size=t.size, steps=t.warmstart_steps, lr=t.warmstart_lr, batch_size=t.warmstart_batch_size,
                         seed=t.seed, slip_rate=t.teacher_slip_rate, cache_dir=t.cache_dir))


