"""Ray session and placement: start or join Ray, place learner ranks in a placement group, size the actors."""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from rlpipe.process_env import DEFAULTS

log = logging.getLogger(__name__)

# Environment every role process gets. Values the driver's own environment sets win (so a cluster's settings,
# e.g. GLOO_SOCKET_IFNAME for its network, pass through).
ACTOR_ENV_DEFAULTS = {
    **DEFAULTS,
    "VLLM_LOGGING_LEVEL": "WARNING",  # vLLM's INFO lines (a page-long engine config per actor) bury the run's own log
}
PASS_THROUGH = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "DS_ACCELERATOR", "VLLM_CPU_KVCACHE_SPACE",
                "WANDB_MODE", "RLPIPE_MASTER_ADDR", "CUDA_VISIBLE_DEVICES")


def actor_env() -> dict[str, str]:
    env = {k: os.environ.get(k, v) for k, v in ACTOR_ENV_DEFAULTS.items()}
    env.update({k: os.environ[k] for k in PASS_THROUGH if k in os.environ})
    return env


@contextmanager
def ray_session(address: Optional[str], num_cpus: int) -> Iterator[None]:
    """Join ``address`` (or RAY_ADDRESS, e.g. under ``ray job submit``), else start a private local instance.

    A locally started instance lives in its own temp dir and is shut down with the run; it never touches other
    Ray instances on the machine. When this process is already connected to Ray (a notebook, a test that built a
    cluster), that connection is used and left open.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        log.info("joined Ray cluster at %s", address)
    else:
        # Short path: Ray's unix sockets live under the temp dir and are limited to ~107 characters.
        temp_dir = tempfile.mkdtemp(prefix="rlpipe-ray-", dir="/tmp")
        ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=True,
                 configure_logging=False)
        log.info("started a local Ray instance (%d logical CPUs, temp dir %s)", num_cpus, temp_dir)
    try:
        yield
    finally:
        ray.shutdown()


def cluster_has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


# Colocated placement on GPUs: a learner rank and a rollout engine share one GPU (the engine sleeps while the learner
# computes). Ray only needs the two fractions to sum to at most 1; vLLM's own share is rollout.gpu_memory_utilization.
COLOCATED_GPU_SHARE = 0.5


def gpus_per_rollout_engine(placement: str) -> float:
    if not cluster_has_gpus():
        return 0.0
    return COLOCATED_GPU_SHARE if placement == "colocated" else 1.0


@dataclass(frozen=True)
class LearnerBundles:
    """A placement group with one bundle per learner rank, asked for (``reserve_learner_bundles``) before the other
    roles' actors are placed, and waited for when the ranks are built (``learner_actor_options``)."""

    pg: Any
    bundle: dict
    strategy: str


def reserve_learner_bundles(num_ranks: int, strategy: str, placement: str = "split") -> LearnerBundles:
    """Ask for one bundle per learner rank (PACK / SPREAD / STRICT_SPREAD across nodes) now, without waiting: the
    learner's bundles are the scarcest resource, so they are reserved first, while the ranks themselves may be built
    after the other roles."""
    import ray

    gpu = COLOCATED_GPU_SHARE if placement == "colocated" else 1.0
    gpu = gpu if cluster_has_gpus() else 0.0
    bundle = {"CPU": 1, "GPU": gpu} if gpu else {"CPU": 1}
    return LearnerBundles(ray.util.placement_group([dict(bundle) for _ in range(num_ranks)], strategy=strategy),
                          bundle, strategy)


def learner_actor_options(bundles: LearnerBundles, num_ranks: int, timeout_s: float) -> list[dict]:
    """Actor options placing rank i in bundle i, once the placement group is placed."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    if not bundles.pg.wait(timeout_seconds=timeout_s):
        raise RuntimeError(
            f"could not place {num_ranks} learner ranks ({bundles.bundle} each, strategy {bundles.strategy}) within "
            f"{timeout_s:.0f} s; cluster resources: {ray.cluster_resources()}"
        )
    return [
        dict(
            num_cpus=1,
            num_gpus=bundles.bundle.get("GPU", 0.0),
            scheduling_strategy=PlacementGroupSchedulingStrategy(bundles.pg, placement_group_bundle_index=i),
            runtime_env={"env_vars": actor_env()},
        )
        for i in range(num_ranks)
    ]


def role_actor_options(count: int, *, gpus: float = 0.0, cpus: float = 1.0, max_restarts: int = 0) -> list[dict]:
    # max_task_retries=0: a call lost with a crashed actor is re-queued by the driver's pool (which first gives a
    # restarted rollout engine the current weights), never silently re-run by Ray on a stale engine.
    return [
        dict(num_cpus=cpus, num_gpus=gpus, max_restarts=max_restarts, max_task_retries=0,
             runtime_env={"env_vars": actor_env()})
        for _ in range(count)
    ]
