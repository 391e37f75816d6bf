"""The distribution layer's two halves: ``RoleActor`` runs in a worker process (one per Ray actor) and holds one
plain role object; ``ActorGroup`` is the driver's handle on N of them — Ray actors, or the same RoleActors in this
process (``cluster.mode=local``), with one API.

The actor is deliberately thin: it builds a plain object from a factory path and forwards method calls. Everything a
role does lives in its plain class (``VLLMEngine``, ``LearnerRank``, ``BatchVerifier``).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from rlpipe.registry import import_object

log = logging.getLogger(__name__)
FATAL_EXIT_CODE = 70
WORKER_NAMES = {"learner": "learner ranks", "rollout": "rollout engines", "verifier": "verifiers"}  # for the log


class RemoteCallError(RuntimeError):
    pass


class WorkerDied(RemoteCallError):
    """A worker's process died during a call (killed, out of memory, crashed)."""

    def __init__(self, role: str, index: int, what: str, cause: BaseException | str):
        self.role, self.index, self.what = role, index, what
        super().__init__(f"{role} worker {index} died during {what}: {_death_reason(cause)}")


def _death_reason(cause: BaseException | str) -> str:
    text = str(cause).strip().splitlines()
    # Ray's message names the cause (SIGKILL / OOM / exit code) in its first lines; the rest is a traceback.
    return " ".join(line.strip() for line in text[:6] if line.strip())[:600] or type(cause).__name__


@dataclass
class _LocalDeath:
    """What a local RoleActor's call returns when its object declared the error fatal (see RoleActor.call)."""

    error: BaseException


class RoleActor:
    """What runs inside each Ray actor (or in this process, local mode): builds its plain object, forwards calls.

    Given ``factory`` at creation, the object is built in ``__init__``, so when Ray restarts a crashed actor
    (``max_restarts``) the new process rebuilds it by itself. Learner ranks are created empty and ``construct``-ed
    instead, because they rendezvous with each other inside their constructors.
    """

    def __init__(self, factory: Optional[str] = None, kwargs: Optional[dict] = None, in_ray: bool = True) -> None:
        self.obj: Any = None
        self.in_ray = in_ray
        self.rebuilds = 0  # local mode: how often the object was rebuilt after a fatal error
        self._recipe = (factory, kwargs or {})
        if factory is not None:
            self.construct(factory, kwargs or {})

    def construct(self, factory: str, kwargs: dict) -> int:
        """Build the object; returns this worker's pid (as ``ready`` does)."""
        self._recipe = (factory, kwargs)
        self.obj = import_object(factory)(**kwargs)
        return os.getpid()

    def ready(self) -> int:
        return os.getpid()

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.obj, method)(*args, **kwargs)
        except Exception as e:
            # An object can declare an error unrecoverable for its process (a dead vLLM engine core). In a Ray actor
            # the process exits, so Ray restarts the actor with a fresh object instead of every later call failing the
            # same way; in this process (local mode) the object is rebuilt in place — exiting would end the driver.
            is_fatal = getattr(self.obj, "is_fatal", None)
            if is_fatal is None or not is_fatal(e):
                raise
            log.error("%s.%s: fatal error %r; restarting the worker", type(self.obj).__name__, method, e)
            if self.in_ray:
                logging.shutdown()
                os._exit(FATAL_EXIT_CODE)
            self._rebuild()
            return _LocalDeath(e)

    def _rebuild(self) -> None:
        factory, kwargs = self._recipe
        if hasattr(self.obj, "shutdown"):
            try:
                self.obj.shutdown()
            except Exception:  # noqa: BLE001 - the object is being replaced because it is broken
                log.exception("shutdown of a broken %s failed", type(self.obj).__name__)
        self.obj = import_object(factory)(**kwargs)
        self.rebuilds += 1

    def rendezvous_address(self) -> tuple[str, int]:
        from rlpipe.learner.settings import free_port_address

        return free_port_address()


@dataclass
class ActorGroup:
    """The driver's handle on ``size`` RoleActors of one role. ``mode`` is 'ray' or 'local'."""

    name: str
    mode: str
    size: int
    actor_options: Sequence[dict] = ()
    timeout_s: float = 900.0
    # Restartable groups (rollout, verifiers) build each object in its actor's constructor, so Ray can restart a
    # crashed actor with ``max_restarts`` (set in actor_options); the driver re-queues the work it lost.
    restartable: bool = False
    _actors: list = field(default_factory=list, init=False)
    _constructing: list = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.restartable:
            return  # actors are created by construct(), with their factory
        if self.mode == "ray":
            import ray

            remote_cls = ray.remote(RoleActor)
            options = self._options()
            self._actors = [remote_cls.options(**options[i]).remote() for i in range(self.size)]
        else:
            self._actors = [RoleActor(in_ray=False) for _ in range(self.size)]

    def _options(self) -> list[dict]:
        return list(self.actor_options) or [{}] * self.size

    # --- construction -----------------------------------------------------------------------------------------

    def construct(self, factory: str, kwargs_per_worker: Sequence[dict], wait: bool = True) -> None:
        """Build the plain objects (in parallel in Ray mode: learner ranks rendezvous inside their constructors).
        ``wait=False`` returns at once: several groups start together, and the group's first call (or
        ``wait_constructed``) waits for its construction to finish, so a role needed later (the learner, after the
        first evaluation) keeps starting while the others work."""
        if self.restartable:
            if self.mode == "ray":
                import ray

                remote_cls = ray.remote(RoleActor)
                self._actors = [remote_cls.options(**o).remote(factory, kw)
                                for o, kw in zip(self._options(), kwargs_per_worker)]
                self._constructing = [w.ready.remote() for w in self._actors]
            else:
                self._actors = [RoleActor(factory, kw, in_ray=False) for kw in kwargs_per_worker]
        else:
            self._constructing = [self._submit(w, "construct", (factory, kw), {})
                                  for w, kw in zip(self._actors, kwargs_per_worker)]
        if wait:
            self.wait_constructed()

    def wait_constructed(self) -> None:
        """Wait until every worker has built its object (a construction error is raised here)."""
        handles, self._constructing = self._constructing, []
        if handles:
            start = time.perf_counter()
            pids = self.get(handles, "construct")
            if self.mode == "ray":  # which process is which, for whoever reads a crash report or a top
                log.info("worker pids: %s %s (ready %.1f s after this wait began)",
                         WORKER_NAMES.get(self.name, self.name), pids, time.perf_counter() - start)

    def pids(self) -> list[int]:
        """The workers' process ids (this process's in local mode)."""
        if self.mode != "ray":
            return [os.getpid()] * self.size
        self.wait_constructed()
        return self.get([w.ready.remote() for w in self._actors], "ready")

    def incarnations(self) -> list:
        """A token per worker that changes when the worker is rebuilt: its pid (Ray), its rebuild count (local)."""
        if self.mode != "ray":
            return [w.rebuilds for w in self._actors]
        return self.pids()

    def wait_until_alive(self, index: int) -> int:
        """After a crash: block until Ray has restarted worker ``index`` (its object rebuilt); returns its
        incarnation token (see ``incarnations``).

        While Ray restarts an actor, calls to it fail with "temporarily unavailable": those are retried until the
        group's deadline. Raises WorkerDied when the actor is gone for good (its restarts are used up).
        """
        if self.mode != "ray":
            return self._actors[index].rebuilds  # a local RoleActor rebuilt its object before reporting the death
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError

        deadline = time.monotonic() + self.timeout_s
        too_late = RemoteCallError(f"{self.name} worker {index} did not come back within {self.timeout_s:.0f} s "
                                   f"after a crash (cluster.call_timeout_s)")
        while True:
            try:
                return ray.get(self._actors[index].ready.remote(), timeout=max(1.0, deadline - time.monotonic()))
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
        return self.get([self._submit(self._actors[0], "rendezvous_address", (), {})], "rendezvous_address")[0]

    # --- calls ------------------------------------------------------------------------------------------------

    def submit(self, method: str, args_per_worker: Optional[Sequence[tuple]] = None, **kwargs: Any) -> list:
        """Start ``method`` on every worker; returns handles (Ray ObjectRefs, or results in local mode).

        Handles can be passed as arguments to another group's ``submit``: Ray resolves them where they are used,
        so large results (exported weights) go learner -> rollout without passing through the driver.
        """
        self.wait_constructed()
        args_per_worker = args_per_worker or [()] * self.size
        return [self._submit(w, "call", (method, *args), kwargs) for w, args in zip(self._actors, args_per_worker)]

    def submit_to(self, index: int, method: str, *args: Any, **kwargs: Any):
        self.wait_constructed()
        return self._submit(self._actors[index], "call", (method, *args), kwargs)

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
        client can re-queue the dead worker's share. Any other error in a call is raised. ``indices`` names each
        handle's worker (default: handle i is worker i). The whole wait has the group's deadline."""
        indices = list(indices) if indices is not None else list(range(len(handles)))
        if self.mode != "ray":
            died = {i: WorkerDied(self.name, indices[i], what, h.error)
                    for i, h in enumerate(handles) if isinstance(h, _LocalDeath)}
            return [None if isinstance(h, _LocalDeath) else h for h in handles], died
        import ray
        from ray.exceptions import RayActorError

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

    def _submit(self, actor, method: str, args: tuple, kwargs: dict):
        if self.mode == "ray":
            return getattr(actor, method).remote(*args, **kwargs)
        return getattr(actor, method)(*args, **kwargs)

    def shutdown(self) -> None:
        if self.mode == "ray":
            import ray

            for w in self._actors:
                ray.kill(w)
        else:
            for w in self._actors:  # free what the objects hold (e.g. a learner's process group)
                if hasattr(w.obj, "shutdown"):
                    w.obj.shutdown()
        self._actors = []


def run_with_requeue(group: ActorGroup, method: str, chunks: Sequence[list], args: tuple, faults: Counter,
                     on_restart: Optional[Callable[[int], None]] = None) -> list[list]:
    """``method(chunk, *args)`` on worker i for chunk i; a chunk whose worker died is re-run on the restarted worker.

    Results come back only from calls that finished, so a re-run chunk is counted once: nothing is lost and
    nothing duplicated. ``on_restart(i)`` runs after worker i came back (e.g. to give it the current weights).
    A worker whose restarts are used up makes the call fail.
    """
    results: list = [[] if not c else None for c in chunks]
    todo = [i for i, c in enumerate(chunks) if c]
    while todo:
        handles = [group.submit_to(i, method, chunks[i], *args) for i in todo]
        out, died = group.settle(handles, method, indices=todo)
        again = []
        for pos, i in enumerate(todo):
            if pos in died:
                log.warning("%s; re-queueing its %d item(s) on the restarted worker", died[pos], len(chunks[i]))
                faults[f"{group.name}_restarts"] += 1
                faults[f"{group.name}_requeued"] += len(chunks[i])
                restart(group, i, on_restart)
                again.append(i)
            else:
                results[i] = out[pos]
        todo = again
    return results


def restart(group: ActorGroup, index: int, on_restart: Optional[Callable[[int], None]] = None) -> None:
    """Wait for worker ``index`` to come back after a crash, then run ``on_restart(index)`` (e.g. give it weights)."""
    group.wait_until_alive(index)
    if on_restart is not None:
        on_restart(index)
