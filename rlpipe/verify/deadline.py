"""A wall-clock deadline around one grading call, so a pathological answer becomes a TIMEOUT verdict, not a hang.

math-verify's own timeouts use ``signal.alarm``, which only works in the main thread, and on expiry it logs a
warning and returns "not equal" — a timeout silently scored as a wrong answer. We switch its timeouts off and put
our own deadline around the whole parse + compare:

- in the main thread (a synchronous Ray actor method, local mode, tests): a ``SIGALRM`` interval timer whose handler
  raises :class:`DeadlineExceeded` inside the running computation — no extra process, microseconds of overhead;
- in any other thread (a threaded actor, a caller's thread pool): the call runs in a persistent child process that
  is killed and replaced when it overruns, because a Python thread cannot be interrupted.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator


class DeadlineExceeded(BaseException):
    """Raised into a computation that ran past its deadline.

    A BaseException, like math-verify's own TimeoutException, so the broad ``except Exception`` blocks inside
    math-verify and sympy cannot swallow it and turn a timeout into an ordinary "not equal".
    """


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def signal_deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`DeadlineExceeded` in this (main) thread if the block runs longer than ``seconds``."""

    def expire(signum, frame):
        raise DeadlineExceeded(f"deadline of {seconds:g} s exceeded")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class ProcessRunner:
    """One persistent child process for calls made off the main thread; replaced after a call overruns.

    ``spawn`` rather than ``fork``: forking a process that runs Ray or vLLM threads can deadlock the child.
    """

    def __init__(self) -> None:
        self._pool = None
        self._lock = threading.Lock()  # one call at a time: the single child process is not re-entrant

    def call(self, fn: Callable[..., Any], args: tuple, seconds: float) -> Any:
        with self._lock:
            if self._pool is None:
                self._pool = multiprocessing.get_context("spawn").Pool(processes=1)
            pending = self._pool.apply_async(fn, args)
            try:
                return pending.get(timeout=seconds)
            except multiprocessing.TimeoutError:
                self._pool.terminate()  # kills the runaway computation; the next call starts a fresh child
                self._pool = None
                raise DeadlineExceeded(f"deadline of {seconds:g} s exceeded") from None

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None


def call_with_deadline(fn: Callable[..., Any], args: tuple, seconds: float | None,
                       runner: ProcessRunner | None = None) -> Any:
    """``fn(*args)``, raising :class:`DeadlineExceeded` after ``seconds`` (None or <= 0: no deadline).

    Off the main thread ``fn`` and ``args`` must be picklable (they go to ``runner``'s child process).
    """
    if not seconds or seconds <= 0:
        return fn(*args)
    if in_main_thread():
        with signal_deadline(seconds):
            return fn(*args)
    if runner is None:
        raise ValueError("a deadline off the main thread needs a ProcessRunner")
    return runner.call(fn, args, seconds)
