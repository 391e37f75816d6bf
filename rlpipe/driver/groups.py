"""Groups of role objects: Ray actors, or the same plain classes in this process (local mode), one API.

The actor is deliberately thin: it builds a plain object from a factory and forwards method calls. Everything a
role does lives in its plain class (``VLLMEngine``, ``LearnerWorker``, ``VerifierWorker``).
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

log = logging.getLogger(__name__)


def resolve(path: str) -> Callable[..., Any]:
    """'package.module:attr' -> the attribute."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


class RoleHost:
    """What runs inside each Ray actor: builds its plain object, then forwards calls.

    Given ``factory`` at creation, the object is built in ``__init__``, so when Ray restarts a crashed actor
    (``max_restarts``) the new process rebuilds it by itself. Learner ranks are created empty and ``construct``-ed
    instead, because they rendezvous with each other inside their constructors.
    """

    def __init__(self, factory: Optional[str] = None, kwargs: Optional[dict] = None) -> None:
        self.obj: Any = None
        if factory is not None:
            self.construct(factory, kwargs or {})

    def construct(self, factory: str, kwargs: dict) -> bool:
        self.obj = resolve(factory)(**kwargs)
        return True

    def ready(self) -> int:
        return os.getpid()

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.obj, method)(*args, **kwargs)
        except Exception as e:
            # An object can declare an error unrecoverable for its process (a dead vLLM engine core): exit, so Ray
            # restarts the actor with a fresh object instead of every later call failing the same way.
            is_fatal = getattr(self.obj, "is_fatal", None)
            if is_fatal is not None and is_fatal(e):
                log.error("%s.%s: fatal error %r; exiting so the actor is restarted", type(self.obj).__name__,
                          method, e)
                logging.shutdown()
                os._exit(70)
            raise

    def rendezvous_address(self) -> tuple[str, int]:
        from rlpipe.learner.worker import free_port_address

        return free_port_address()


class RemoteCallError(RuntimeError):
    pass


class WorkerDied(RemoteCallError):
    """A worker's process died during a call (killed, out of memory, crashed)."""

    def __init__(self, role: str, index: int, what: str, cause: BaseException):
        self.role, self.index, self.what = role, index, what
        super().__init__(f"{role} worker {index} died during {what}: {_death_reason(cause)}")


def _death_reason(cause: BaseException) -> str:
    text = str(cause).strip().splitlines()
    # Ray's message names the cause (SIGKILL / OOM / exit code) in its first lines; the rest is a traceback.
    return " ".join(line.strip() for line in text[:6] if line.strip())[:600] or type(cause).__name__


@dataclass
class Group:
    """``size`` workers of one role. ``mode`` is 'ray' or 'local'."""

    name: str
    mode: str
    size: int
    actor_options: Sequence[dict] = ()
    timeout_s: float = 900.0
    # Restartable groups (rollout, verifiers) build each object in its actor's constructor, so Ray can restart a
    # crashed actor with ``max_restarts`` (set in actor_options); the driver re-queues the work it lost.
    restartable: bool = False
    _workers: list = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.restartable:
            return  # actors are created by construct(), with their factory
        if self.mode == "ray":
            import ray

            remote_cls = ray.remote(RoleHost)
            options = self._options()
            self._workers = [remote_cls.options(**options[i]).remote() for i in range(self.size)]
        else:
            self._workers = [RoleHost() for _ in range(self.size)]

    def _options(self) -> list[dict]:
        return list(self.actor_options) or [{}] * self.size

    # --- construction -----------------------------------------------------------------------------------------

    def construct(self, factory: str, kwargs_per_worker: Sequence[dict]) -> None:
        """Build the plain objects (in parallel in Ray mode: learner ranks rendezvous inside their constructors)."""
        if self.restartable:
            if self.mode == "ray":
                import ray

                remote_cls = ray.remote(RoleHost)
                self._workers = [remote_cls.options(**o).remote(factory, kw)
                                 for o, kw in zip(self._options(), kwargs_per_worker)]
                self.get([w.ready.remote() for w in self._workers], "construct")
            else:
                self._workers = [RoleHost(factory, kw) for kw in kwargs_per_worker]
            return
        self.get([self._submit(w, "construct", (factory, kw), {}) for w, kw in zip(self._workers, kwargs_per_worker)],
                 "construct")

    def pids(self) -> list[int]:
        """The workers' process ids (this process's in local mode)."""
        if self.mode != "ray":
            return [os.getpid()] * self.size
        return self.get([w.ready.remote() for w in self._workers], "ready")

    def wait_until_alive(self, index: int) -> int:
        """After a crash: block until Ray has restarted worker ``index`` (its object rebuilt); returns its pid.

        While Ray restarts an actor, calls to it fail with "temporarily unavailable": those are retried until the
        group's deadline. Raises WorkerDied when the actor is gone for good (its restarts are used up).
        """
        if self.mode != "ray":
            return os.getpid()
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError

        deadline = time.monotonic() + self.timeout_s
        too_late = RemoteCallError(f"{self.name} worker {index} did not come back within {self.timeout_s:.0f} s "
                                   f"after a crash (cluster.call_timeout_s)")
        while True:
            try:
                return ray.get(self._workers[index].ready.remote(), timeout=max(1.0, deadline - time.monotonic()))
            except ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise too_late from None
                time.sleep(0.5)
            except ActorDiedError as e:
                raise WorkerDied(self.name, index, "restart", e) from None
            except GetTimeoutError:
                raise too_late from None

    def rendezvous_address(self) -> tuple[str, int]:
        """Address and free port on worker 0's node (for torch.distributed's rendezvous)."""
        return self.get([self._submit(self._workers[0], "rendezvous_address", (), {})], "rendezvous_address")[0]

    # --- calls ------------------------------------------------------------------------------------------------

    def submit(self, method: str, args_per_worker: Optional[Sequence[tuple]] = None, **kwargs: Any) -> list:
        """Start ``method`` on every worker; returns handles (Ray ObjectRefs, or results in local mode).

        Handles can be passed as arguments to another group's ``submit``: Ray resolves them where they are used,
        so large results (exported weights) go learner -> rollout without passing through the driver.
        """
        args_per_worker = args_per_worker or [()] * self.size
        return [self._submit(w, "call", (method, *args), kwargs) for w, args in zip(self._workers, args_per_worker)]

    def submit_to(self, index: int, method: str, *args: Any, **kwargs: Any):
        return self._submit(self._workers[index], "call", (method, *args), kwargs)

    def call(self, method: str, args_per_worker: Optional[Sequence[tuple]] = None, **kwargs: Any) -> list:
        return self.get(self.submit(method, args_per_worker, **kwargs), method)

    def get(self, handles: list, what: str = "call", indices: Optional[Sequence[int]] = None) -> list:
        """Results of ``handles`` in order. Fails fast: a worker's death is raised as soon as it is known
        (WorkerDied, naming the worker), not after the other workers' calls return or the deadline passes."""
        results, died = self.settle(handles, what, indices)
        if died:
            raise next(iter(died.values()))
        return results

    def settle(self, handles: list, what: str = "call", indices: Optional[Sequence[int]] = None,
               ) -> tuple[list, dict[int, WorkerDied]]:
        """Wait for every handle; returns (results, {position: WorkerDied}) — deaths are returned, not raised, so a
        pool can re-queue the dead worker's share. Any other error in a call is raised. ``indices`` names each
        handle's worker (default: handle i is worker i). The whole wait has the group's deadline."""
        if self.mode != "ray":
            return list(handles), {}
        import ray
        from ray.exceptions import RayActorError

        indices = list(indices) if indices is not None else list(range(len(handles)))
        results: list = [None] * len(handles)
        died: dict[int, WorkerDied] = {}
        position = {h: i for i, h in enumerate(handles)}
        pending = list(handles)
        deadline = time.monotonic() + self.timeout_s
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                late = sorted(indices[position[h]] for h in pending)
                raise RemoteCallError(
                    f"{self.name}.{what} did not finish within {self.timeout_s:.0f} s (cluster.call_timeout_s): "
                    f"worker(s) {late} hung or far too slow")
            ready, pending = ray.wait(pending, num_returns=1, timeout=min(remaining, 5.0))
            for h in ready:
                i = position[h]
                try:
                    results[i] = ray.get(h)
                except RayActorError as e:
                    died[i] = WorkerDied(self.name, indices[i], what, e)
                    if not self.restartable:
                        # The others (e.g. learner ranks blocked in a collective with the dead one) would only
                        # wait for their deadline: fail now.
                        raise died[i] from None
        return results, died

    def _submit(self, worker, method: str, args: tuple, kwargs: dict):
        if self.mode == "ray":
            return getattr(worker, method).remote(*args, **kwargs)
        return getattr(worker, method)(*args, **kwargs)

    def shutdown(self) -> None:
        if self.mode == "ray":
            import ray

            for w in self._workers:
                ray.kill(w)
        else:
            for w in self._workers:  # free what the objects hold (e.g. a learner's process group)
                if hasattr(w.obj, "shutdown"):
                    w.obj.shutdown()
        self._workers = []

