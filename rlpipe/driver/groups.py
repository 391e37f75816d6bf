"""Groups of role objects: Ray actors, or the same plain classes in this process (local mode), one API.

The actor is deliberately thin: it builds a plain object from a factory and forwards method calls. Everything a
role does lives in its plain class (``VLLMEngine``, ``LearnerWorker``, ``VerifierWorker``).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

log = logging.getLogger(__name__)


def resolve(path: str) -> Callable[..., Any]:
    """'package.module:attr' -> the attribute."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


class RoleHost:
    """What runs inside each Ray actor: an empty shell until ``construct``; then it forwards calls."""

    def __init__(self) -> None:
        self.obj: Any = None

    def construct(self, factory: str, kwargs: dict) -> bool:
        self.obj = resolve(factory)(**kwargs)
        return True

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.obj, method)(*args, **kwargs)

    def rendezvous_address(self) -> tuple[str, int]:
        from rlpipe.learner.worker import free_port_address

        return free_port_address()


class RemoteCallError(RuntimeError):
    pass


@dataclass
class Group:
    """``size`` workers of one role. ``mode`` is 'ray' or 'local'."""

    name: str
    mode: str
    size: int
    actor_options: Sequence[dict] = ()
    timeout_s: float = 900.0
    _workers: list = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.mode == "ray":
            import ray

            remote_cls = ray.remote(RoleHost)
            options = list(self.actor_options) or [{}] * self.size
            self._workers = [remote_cls.options(**options[i]).remote() for i in range(self.size)]
        else:
            self._workers = [RoleHost() for _ in range(self.size)]

    # --- construction -----------------------------------------------------------------------------------------

    def construct(self, factory: str, kwargs_per_worker: Sequence[dict]) -> None:
        """Build the plain objects (in parallel in Ray mode: learner ranks rendezvous inside their constructors)."""
        self.get([self._submit(w, "construct", (factory, kw), {}) for w, kw in zip(self._workers, kwargs_per_worker)],
                 "construct")

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

    def get(self, handles: list, what: str = "call") -> list:
        if self.mode != "ray":
            return list(handles)
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        try:
            return ray.get(handles, timeout=self.timeout_s)
        except GetTimeoutError:
            raise RemoteCallError(
                f"{self.name}.{what} did not finish within {self.timeout_s:.0f} s (cluster.call_timeout_s): "
                f"a worker is hung or far too slow"
            ) from None
        except RayActorError as e:
            raise RemoteCallError(f"a {self.name} worker died during {what}: {e}") from e

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

