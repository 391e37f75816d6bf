"""One session builder for every command: open Ray (or stay in this process), build the roles the command needs
from the config, and close them in one order. ``rlpipe train``, ``eval`` and ``filter`` all go through it."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable, Optional

from rlpipe.config.schema import Config
from rlpipe.driver import build, ray_cluster
from rlpipe.driver.actors import ActorGroup
from rlpipe.driver.clients import LearnerClient, RolloutClient, VerifierClient
from rlpipe.driver.collect import Collector
from rlpipe.driver.prompts import PromptItem, PromptSource
from rlpipe.driver.trainer import Trainer
from rlpipe.errors import UserError


@dataclass(frozen=True)
class LearnerSpec:
    """The learner a command needs: training runs build it from the config (``LearnerSpec.of``); evaluation builds
    one rank with no reference and the heads saved beside the model it scores."""

    num_ranks: int
    with_reference: bool
    heads: list = field(default_factory=list)

    @staticmethod
    def of(cfg: Config, model_path: str) -> "LearnerSpec":
        return LearnerSpec(cfg.learner.num_workers, cfg.algorithm.kl_coef > 0, build.head_specs(cfg, model_path))


class Session:
    """``with Session(cfg, model_path, ...) as s:`` — ``s.learner``, ``s.rollout``, ``s.verifiers`` (None for roles
    not asked for). On entry the engines and verifiers are ready; the learner may still be starting (its first call
    waits for it). On exit the engines go first (in local mode an in-process vLLM engine uses the process group the
    learner owns), then the verifiers, the learner, and Ray itself if the session started it."""

    def __init__(self, cfg: Config, model_path: str, *, learner: Optional[LearnerSpec] = None, rollout: bool = True,
                 verifiers: bool = True, max_response_tokens: Optional[int] = None):
        self.cfg, self.model_path = cfg, model_path
        self._learner_spec, self._want_rollout, self._want_verifiers = learner, rollout, verifiers
        self.max_model_len = cfg.data.max_prompt_tokens + (max_response_tokens or cfg.rollout.max_response_tokens)
        self.learner: Optional[LearnerClient] = None
        self.rollout: Optional[RolloutClient] = None
        self.verifiers: Optional[VerifierClient] = None
        self._stack = ExitStack()

    def actors_needed(self) -> int:
        """Logical CPUs this session's actors take (one each; oversubscribing real cores is fine)."""
        return ((self._learner_spec.num_ranks if self._learner_spec else 0)
                + (self.cfg.rollout.num_engines if self._want_rollout else 0)
                + (self.cfg.verifier.num_workers if self._want_verifiers else 0))

    def __enter__(self) -> "Session":
        c = self.cfg.cluster
        try:
            if c.mode == "ray":
                self._stack.enter_context(ray_cluster.ray_session(c.address, max(2, self.actors_needed())))
                self._check_resources()
                # Every role starts at once. The learner's bundles are reserved first (the scarcest resource), the
                # rollout engines' actors created next: they take longest to start (importing vLLM alone is ~10 s on
                # two CPU cores), and the first evaluation needs only them and the verifiers. The learner keeps
                # starting meanwhile; its first call waits for it (ActorGroup.construct).
                bundles = (reserve_learner_bundles(self.cfg, self._learner_spec.num_ranks)
                           if self._learner_spec is not None else None)
                self._start_rollout_and_verifiers()
                self._start_learner(bundles)
            else:
                # In one process construction is sequential, and the learner must come first: an in-process vLLM
                # engine joins the default process group the learner creates (were the engine first, it would create
                # its own and the learner's init_process_group would fail).
                self._start_learner()
                self._start_rollout_and_verifiers()
            for client in (self.rollout, self.verifiers):
                if client is not None:
                    client.group.wait_constructed()
            if self.rollout is not None:
                self.rollout.started()
        except BaseException:
            self.close()
            raise
        return self

    def _start_learner(self, bundles: Optional[ray_cluster.LearnerBundles] = None) -> None:
        if self._learner_spec is not None:
            self.learner = build_learner(self.cfg, self.model_path, self._learner_spec, wait=False, bundles=bundles)

    def _start_rollout_and_verifiers(self) -> None:
        if self._want_rollout:
            self.rollout = build_rollout(self.cfg, self.model_path, self.max_model_len, wait=False)
        if self._want_verifiers:
            self.verifiers = build_verifiers(self.cfg, wait=False)

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for client in (self.rollout, self.verifiers, self.learner):
            if client is not None:
                client.group.shutdown()
        self.rollout = self.verifiers = self.learner = None
        self._stack.close()

    def _check_resources(self) -> None:
        """Fail at once, with the numbers, when the Ray cluster is too small (instead of waiting for a placement
        group that can never be placed until cluster.call_timeout_s runs out)."""
        import ray

        cfg, have = self.cfg, ray.cluster_resources()
        need_cpus = self.actors_needed()
        problems = []
        if have.get("CPU", 0) < need_cpus:
            problems.append(f"{need_cpus} logical CPUs (one per learner rank, rollout engine and verifier), the "
                            f"cluster has {have.get('CPU', 0):g}")
        if have.get("GPU", 0) > 0:
            share = ray_cluster.COLOCATED_GPU_SHARE if cfg.cluster.placement == "colocated" else 1.0
            ranks = self._learner_spec.num_ranks if self._learner_spec else 0
            need_gpus = share * (ranks + (cfg.rollout.num_engines if self._want_rollout else 0))
            if have["GPU"] < need_gpus:
                problems.append(f"{need_gpus:g} GPUs (learner ranks + rollout engines, cluster.placement="
                                f"{cfg.cluster.placement}), the cluster has {have['GPU']:g}")
        if problems:
            raise UserError("the Ray cluster is too small for this run: it needs " + "; and ".join(problems) +
                            ". Start Ray with more logical CPUs (ray start --num-cpus=N) or run fewer workers.")

    def trainer(self, prompts: PromptSource, tokenize: Callable[[PromptItem], list[int]]) -> Trainer:
        """The RL step over this session's roles."""
        cfg = self.cfg
        collector = Collector(prompts, tokenize, self.rollout, self.verifiers, build.collect_settings(cfg))
        return Trainer(collector=collector, rollout=self.rollout, learner=self.learner,
                       settings=build.step_settings(cfg), resets=build.reset_policy(cfg),
                       engines_share_devices=cfg.cluster.placement == "colocated")


def build_learner(cfg: Config, model_path: str, spec: LearnerSpec, wait: bool = True,
                  bundles: Optional[ray_cluster.LearnerBundles] = None) -> LearnerClient:
    """The learner ranks (``bundles``: their placement group, if already reserved)."""
    mode, timeout, n = cfg.cluster.mode, cfg.cluster.call_timeout_s, spec.num_ranks
    if mode == "ray" and bundles is None:
        bundles = reserve_learner_bundles(cfg, n)
    options = ray_cluster.learner_actor_options(bundles, n, timeout) if mode == "ray" else ()
    group = ActorGroup("learner", mode, n, options, timeout)
    master_addr, master_port = group.rendezvous_address()
    common = dict(
        world_size=n,
        master_addr=master_addr,
        master_port=master_port,
        model_path=model_path,
        backend=cfg.learner.backend,
        optimizer=build.optimizer_settings(cfg),
        objective=build.objective_settings(cfg),
        micro_batch_samples=cfg.learner.micro_batch_samples,
        max_tokens_per_micro_batch=cfg.learner.max_tokens_per_micro_batch,
        packing=cfg.learner.packing,
        threads=cfg.learner.threads_per_rank,
        with_reference=spec.with_reference,
        old_logprobs=cfg.algorithm.old_logprobs,
        correction=build.correction_settings(cfg),
        seed=cfg.trainer.seed,
        dtype=cfg.model.dtype,
        dist_timeout_s=timeout,
        heads=spec.heads,
        lora=build.lora_settings(cfg),
        backend_options=(dict(zero_stage=cfg.learner.deepspeed.zero_stage,
                              offload_optimizer=cfg.learner.deepspeed.offload_optimizer)
                         if cfg.learner.backend == "deepspeed" else {}),
    )
    group.construct("rlpipe.learner.rank:LearnerRank", [dict(common, rank=i) for i in range(n)], wait=wait)
    return LearnerClient(group, cfg.learner.updates_per_step)


def reserve_learner_bundles(cfg: Config, num_ranks: int) -> ray_cluster.LearnerBundles:
    return ray_cluster.reserve_learner_bundles(num_ranks, cfg.cluster.learner_placement_strategy,
                                               cfg.cluster.placement)


def build_rollout(cfg: Config, model_path: str, max_model_len: int, wait: bool = True) -> RolloutClient:
    mode, r = cfg.cluster.mode, cfg.rollout
    gpus = ray_cluster.gpus_per_rollout_engine(cfg.cluster.placement) if mode == "ray" else 0
    options = (ray_cluster.role_actor_options(r.num_engines, gpus=gpus, max_restarts=cfg.cluster.max_actor_restarts)
               if mode == "ray" else ())
    group = ActorGroup("rollout", mode, r.num_engines, options, cfg.cluster.call_timeout_s, restartable=True)
    group.construct("rlpipe.rollout:build_engine", [
        dict(engine=r.engine, model_path=model_path, seed=cfg.trainer.seed + i, dtype=cfg.model.dtype,
             max_model_len=max_model_len, kv_cache_bytes=r.kv_cache_bytes,
             gpu_memory_utilization=r.gpu_memory_utilization, enforce_eager=r.enforce_eager,
             seed_per_request=r.seed_per_request, multi_turn=build.multi_turn_options(cfg))
        for i in range(r.num_engines)
    ], wait=wait)
    client = RolloutClient(group)
    if wait:
        client.started()
    return client


def build_verifiers(cfg: Config, wait: bool = True) -> VerifierClient:
    mode, v = cfg.cluster.mode, cfg.verifier
    options = (ray_cluster.role_actor_options(v.num_workers, max_restarts=cfg.cluster.max_actor_restarts)
               if mode == "ray" else ())
    group = ActorGroup("verifier", mode, v.num_workers, options, cfg.cluster.call_timeout_s, restartable=True)
    group.construct("rlpipe.verify.batch_scorer:BatchVerifier",
                    [dict(name=v.name, options=build.verifier_options(cfg))] * v.num_workers, wait=wait)
    return VerifierClient(group, v.max_retries)
