"""The ``python`` tool: runs the model's code in the code verifier's bubblewrap sandbox, with state kept across one
rollout's calls by *replay*.

``{"name": "python", "arguments": {"code": "x = 6 * 7"}}`` then ``{"code": "print(x)"}`` -> ``42``.

**Why replay.** Each call starts a fresh sandbox with exactly the verifier's containment (``run_sandboxed``: no
network, read-only file system, size-capped tmpfs, rlimits, an unprivileged uid, seccomp, a wall-clock deadline, an
output cap and a watchdog on the memory of all its processes; docs/sandbox.md) and runs in one process every earlier
cell of the rollout that succeeded, with their output discarded, then the new cell with its stdout captured.
Variables, functions, imports and the files a cell wrote in /work or /tmp come back because the code that made them
runs again. No process lives from one call to the next, so there is nothing long-lived to escape from, to leak
memory, processes or descriptors over a long rollout, or to leave behind when a worker dies; every call gets the
guarantees the hostile suite checks for the verifier (``tests/agents/test_python_tool_hostile.py`` runs that suite
through this tool). The costs: every call re-runs all earlier cells, so their time adds to each later call; and a
cell that is not deterministic (``random``, the clock, pids, ``/proc``) builds the state anew on replay, which may
differ from what the model saw: after ``r = random.random()`` and ``print(r)``, a later ``print(r)`` may print a
different number. A cell's partial effects are not kept when it fails: a cell that raised, timed out, exited or
was stopped for its output or memory is never replayed, so ``y = 5; 1 / 0`` leaves no ``y`` (a notebook would keep
it). A cell that replays differently and raises is dropped from the session with a note in the observation; one
that times out or ends the process on replay is dropped with the cells after it, and the call is a ToolError saying
so (the new code did not run).

**What the model sees.** The new cell's stdout (its stderr is discarded), truncated to ``max_output_chars`` with a
note; ``(no output)`` when it printed nothing. A cell that raised gives a ``ToolError`` whose message is its output
and the last lines of its traceback (``ZeroDivisionError: division by zero``); syntax errors are found on the host
before any sandbox starts. Timeouts (``python: timed out after 5.0 s``, with the output printed before), output
beyond :data:`OUTPUT_LIMIT_BYTES` and memory beyond ``total_memory_mb`` are ``ToolError`` too. Only a sandbox that
cannot run at all (bwrap missing or refused, the host out of processes) is a ``ToolInfraError``: the harness reports
"started" before any of the model's code runs, so no program can turn its failure into a dropped rollout.

**Why the framing cannot be forged.** The sandbox's pid 1 is a harness (``rlpipe/agents/python_cell.py``, standard
library only, mounted read-only) that forks the process running the cells before it reads the call's random key, and
hands that process the descriptor of the observation pipe only when the new cell starts. The host accepts only
reports signed with the key (HMAC-SHA256, the verifier's format and reader), and the program's output travels
inside the signed record, so printed lines that look like the harness's markers, a status or a traceback are just
output. ``python_cell.py`` gives the long form.

Timing: ``timeout_s`` bounds the new cell alone; the earlier cells get their own budget on replay (``timeout_s``
plus twice the time they took when they ran), so a cell's success does not depend on how much came before it.
Measured on 2 shared cores (load average 6, Debian 12, bubblewrap 0.8.0): ``print(1)`` takes 70 to 90 ms a call
(median of 10), with 0 or 3 trivial earlier cells alike, against ~45 ms for a bare sandboxed ``python3 -S -c pass``;
the rest is the harness's imports, its fork and its clean-up. Replay adds the earlier cells' own run time.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import secrets
import shutil
import tempfile
import traceback
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Optional

from rlpipe.agents.python_cell import CELL_DIR
from rlpipe.agents.tools import ToolError, ToolInfraError, register_tool
from rlpipe.verify.code import _temp_base, read_reports
from rlpipe.verify.judge import SANDBOX_PYTHON
from rlpipe.verify.sandbox import SandboxLimits, SandboxUnavailable, run_sandboxed

OUTPUT_LIMIT_BYTES = 1 << 20  # the harness stops a cell that prints more than this (the observation is far shorter)
TRACEBACK_LINES = 10  # of a failed cell's traceback, the last lines shown to the model
_STARTUP_S = 3.0  # allowance in the host's deadline for the sandbox's start and the harness's report
_PARSED_AS = "<rlpipe-cell>"
# The host parses cells only to check them; their compile-time warnings (invalid escapes...) are not ours to log.
warnings.filterwarnings("ignore", module=re.escape(_PARSED_AS))
_BOOT = f"import sys; sys.path.insert(0, {CELL_DIR!r}); import python_cell; python_cell.main()"


@dataclass
class CallOutcome:
    """What one call did, for callers that count outcomes (and tests); ``PythonExecutor.last`` holds the latest.

    ``status``: ``ok``; ``error`` (raised) or ``syntax``; ``timeout``, ``output_limit``, ``memory_limit``,
    ``exited`` (the process running the cell ended before it finished); ``replay_failed`` (an earlier cell timed out,
    exited or broke the protocol on replay: the new code did not run); ``refused`` (bad arguments, too long, not
    text: nothing ran); ``infra`` (the sandbox could not run).
    """

    status: str
    stdout: str = ""  # the new cell's whole output as the harness captured it (before truncation)
    error: str = ""  # the traceback or the reason
    wall_s: float = 0.0  # the whole call, sandbox start-up and replay included
    cell_s: float = 0.0  # the new cell alone
    dropped: list[str] = field(default_factory=list)  # earlier cells dropped from the session by this call


@dataclass
class _Cell:
    name: str  # "<cell N>": the filename in tracebacks, N the number of the call that first ran it
    code: str
    seconds: float  # how long it ran then (sets the replay budget)


@register_tool("python")
class PythonExecutor:
    """Runs Python cells in a fresh bubblewrap sandbox per call, replaying the earlier cells to restore their state.

    One instance per rollout; calls are sequential (not thread-safe). Options (keyword arguments):
        timeout_s: wall-clock limit of the new cell (the replay of earlier cells has its own budget, see above).
        memory_mb: address-space limit of each process. total_memory_mb: resident memory of all of them together.
        max_output_chars: the observation's output is cut to this many characters, with a note.
        max_processes: processes and threads in the sandbox, the harness and the cell process included.
        tmpfs_mb: size of each writable tmpfs (/work, /tmp, /dev/shm).
        run_as_uid: the unprivileged uid the sandbox runs as when the caller is root.
        bwrap: path of the bwrap executable (default: found on PATH). seccomp: the verifier's syscall filter.
        max_code_chars: longer code is refused without running.
    """

    name = "python"
    description = ("Runs Python 3 code in a sandbox (no network, no packages beyond the system's); variables, "
                   "functions and imports persist across calls; returns what the code printed.")

    def __init__(self, *, timeout_s: float = 5.0, memory_mb: int = 512, total_memory_mb: int = 1024,
                 max_output_chars: int = 2000, max_processes: int = 32, tmpfs_mb: int = 64,
                 run_as_uid: Optional[int] = 65534, bwrap: Optional[str] = None, seccomp: bool = True,
                 max_code_chars: int = 20000):
        if timeout_s <= 0 or max_output_chars <= 0 or max_code_chars <= 0:
            raise ValueError("timeout_s, max_output_chars and max_code_chars must be positive")
        self.timeout_s = float(timeout_s)
        self.memory_mb, self.total_memory_mb = int(memory_mb), int(total_memory_mb)
        self.max_output_chars, self.max_code_chars = int(max_output_chars), int(max_code_chars)
        self.max_processes, self.tmpfs_mb = int(max_processes), int(tmpfs_mb)
        self.run_as_uid, self.bwrap, self.seccomp = run_as_uid, bwrap, seccomp
        self.last: Optional[CallOutcome] = None
        self._cells: list[_Cell] = []
        self._calls = 0
        self._harness: Optional[str] = None
        self._finalizer: Optional[weakref.finalize] = None
        self._closed = False

    # --- the tool protocol -------------------------------------------------------------------------------------

    def call(self, arguments: dict[str, Any]) -> str:
        """Run ``arguments["code"]`` after replaying the earlier cells; returns the observation text.

        Raises:
            ToolError: bad arguments, a syntax error, the cell raised, exited, timed out, printed or used too much;
                or an earlier cell failed on replay. The message is the observation.
            ToolInfraError: the sandbox could not run (or the tool was closed).
        """
        if self._closed:
            raise ToolInfraError("python: the tool was closed")
        code = arguments.get("code") if isinstance(arguments, dict) else None
        if not isinstance(code, str):
            return self._refuse("python: arguments need a string 'code'")
        if len(code) > self.max_code_chars:
            return self._refuse(f"python: code too long ({len(code)} characters; at most {self.max_code_chars})")
        try:
            code.encode("utf-8")
        except UnicodeEncodeError:
            return self._refuse("python: the code is not valid text (it contains a lone surrogate)")
        self._calls += 1
        cell = _Cell(f"<cell {self._calls}>", code, 0.0)
        problem = _syntax_problem(code, cell.name)
        if problem:
            self.last = CallOutcome("syntax", error=problem)
            raise ToolError(problem)
        return self._run(cell)

    def close(self) -> None:
        """Drop the session's state and remove the harness copy; the tool is not called again."""
        self._closed = True
        self._cells.clear()
        if self._finalizer is not None:
            self._finalizer()  # removes the directory, once

    # --- one call ----------------------------------------------------------------------------------------------

    def _refuse(self, message: str) -> str:
        self.last = CallOutcome("refused", error=message)
        raise ToolError(message)

    def _limits(self, replay_s: float) -> SandboxLimits:
        wall = _STARTUP_S + replay_s + self.timeout_s
        return SandboxLimits(wall_s=wall, cpu_s=int(wall) + 1, memory_mb=self.memory_mb,
                             total_memory_mb=self.total_memory_mb, max_processes=self.max_processes,
                             tmpfs_mb=self.tmpfs_mb, max_stdout_bytes=2 * OUTPUT_LIMIT_BYTES + (1 << 20))

    def _run(self, cell: _Cell) -> str:
        replay_s = self.timeout_s + 2 * sum(c.seconds for c in self._cells)
        key = secrets.token_bytes(32)
        task = {"key": key.hex(), "cells": [{"name": c.name, "code": c.code} for c in self._cells],
                "new": {"name": cell.name, "code": cell.code}, "timeout_s": self.timeout_s,
                "replay_timeout_s": replay_s, "max_output_bytes": OUTPUT_LIMIT_BYTES}
        try:
            result = run_sandboxed([SANDBOX_PYTHON, "-I", "-B", "-S", "-c", _BOOT], stdin=json.dumps(task).encode(),
                                   limits=self._limits(replay_s), ro_binds=[(self._harness_dir(), CELL_DIR)],
                                   run_as_uid=self.run_as_uid, bwrap=self.bwrap, seccomp=self.seccomp,
                                   as_pid_1=True)
        except SandboxUnavailable as e:
            self.last = CallOutcome("infra", error=str(e))
            raise ToolInfraError(f"python: {e}") from None
        except OSError as e:  # host trouble (no temp dir, out of pids or fds): the rollout is dropped, never scored
            self.last = CallOutcome("infra", error=str(e))
            raise ToolInfraError(f"python: cannot run the sandbox: {e}") from None
        reports = read_reports(result.stdout, key)
        record = reports.get("record")
        if record is None:
            return self._without_record(result, "started" in reports)
        return self._outcome(cell, record, result.wall_s)

    def _without_record(self, result, started: bool) -> str:
        """The harness never reported: the sandbox failed to start (infra), or the host stopped it after "started"
        (memory watchdog, output cap, deadline): the cell's doing, so a ToolError."""
        if not started:
            stderr = result.stderr[-1500:].decode("utf-8", "replace")
            self.last = CallOutcome("infra", error=stderr, wall_s=result.wall_s)
            raise ToolInfraError(f"python: the sandbox did not start (exit code {result.exit_code}, timed out: "
                                 f"{result.timed_out}): {stderr.strip()[-500:]}")
        if result.memory_exceeded:
            status, message = "memory_limit", (f"python: memory limit exceeded: the cell's processes used more "
                                               f"than {self.total_memory_mb} MB together and were stopped")
        elif result.timed_out:
            status, message = "timeout", f"python: timed out after {self.timeout_s} s"
        elif result.output_overflow:
            status, message = "output_limit", "python: output limit exceeded; the cell was stopped"
        else:
            status, message = "exited", "python: the cell's sandbox ended without a result"
        self.last = CallOutcome(status, error=message, wall_s=result.wall_s)
        raise ToolError(message)

    def _outcome(self, cell: _Cell, record: dict, wall_s: float) -> str:
        """Update the session from the harness's record and turn it into the observation (or a ToolError)."""
        status = str(record.get("status"))
        stdout = base64.b64decode(str(record.get("out", ""))).decode("utf-8", "replace")
        cell_s = float(record.get("cell_s") or 0.0)
        replayed = record.get("replayed") or []
        notes, keep, dropped = [], [], []
        for i, earlier in enumerate(self._cells):
            error = replayed[i] if i < len(replayed) else None
            if error:  # it raised this time: the state it used to build is gone
                dropped.append(earlier.name)
                notes.append(f"[note: earlier {earlier.name} raised when replayed and was dropped from the session: "
                             f"{_last_line(error)}]")
            elif i < len(replayed):
                keep.append(earlier)
        if status.startswith("replay_"):
            if not self._cells:  # nothing of the model's had run in this sandbox yet: it cannot be the model's doing
                self.last = CallOutcome("infra", error=status, wall_s=wall_s)
                raise ToolInfraError(f"python: the cell process failed before running any code ({status})")
            # The cell that failed and those after it (they may depend on it). Failing after the last cell (a thread
            # it left behind) counts against the last one, so that every failure shrinks the session.
            lost = self._cells[min(int(record.get("at") or 0), len(self._cells) - 1):]
            self._cells = [c for c in keep if all(c is not gone for gone in lost)]
            dropped += [c.name for c in lost]
            why = {"replay_timeout": "timed out", "replay_exited": "ended the process",
                   "replay_protocol": "broke the harness's protocol"}.get(status, "failed")
            after = f" and the {len(lost) - 1} cell(s) after it" if len(lost) > 1 else ""
            message = (f"python: replaying the earlier cells failed: {lost[0].name} {why} on replay, so it{after} "
                       f"left the session; this code did not run, send it again")
            self.last = CallOutcome("replay_failed", error=message, wall_s=wall_s, dropped=dropped)
            raise ToolError("\n".join(notes + [message]))
        self._cells = keep
        shown = self._truncate(stdout).rstrip("\n")  # the chat turn ends the text; print's last newline adds nothing
        outcome = CallOutcome(status, stdout=stdout, wall_s=wall_s, cell_s=cell_s, dropped=dropped)
        self.last = outcome
        if status == "ok":
            self._cells.append(_Cell(cell.name, cell.code, cell_s))
            return "\n".join(notes + [shown or "(no output)"])
        if status in ("error", "syntax"):
            outcome.error = str(record.get("error") or "")
            tail = "\n".join(_tail(outcome.error, TRACEBACK_LINES))
            raise ToolError("\n".join(notes + [part for part in (shown, tail) if part]))
        if status == "timeout":
            outcome.error = f"python: timed out after {self.timeout_s} s"
        elif status == "overflow":
            outcome.status = "output_limit"
            outcome.error = f"python: output limit exceeded: the cell printed more than {OUTPUT_LIMIT_BYTES} " \
                            f"bytes and was stopped"
        elif status == "exited":
            code = record.get("exit")
            how = f"killed by signal {-code}" if isinstance(code, int) and code < 0 else f"exit status {code}"
            outcome.error = (f"python: the process running the cell ended before the cell finished ({how}); its "
                             f"state is not kept")
        else:  # "protocol": the cell wrote garbage to the harness's socket
            outcome.status = "exited"
            outcome.error = "python: the cell broke the harness's protocol and was stopped"
        before = f"; output before that:\n{shown}" if shown else ""
        raise ToolError("\n".join(notes + [outcome.error + before]))

    def _truncate(self, text: str) -> str:
        if len(text) <= self.max_output_chars:
            return text
        return (text[:self.max_output_chars] +
                f"\n[output truncated: {len(text)} characters, the first {self.max_output_chars} shown]")

    def _harness_dir(self) -> str:
        """A copy of python_cell.py that the sandbox's unprivileged uid can read (the checkout may sit in a private
        directory), mounted read-only; one per tool instance, removed by close() or when it is garbage-collected."""
        if self._harness and os.path.isdir(self._harness):
            return self._harness
        root = tempfile.mkdtemp(prefix="rlpipe-pytool-", dir=_temp_base())
        self._finalizer = weakref.finalize(self, shutil.rmtree, root, True)
        here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "python_cell.py")
        target = os.path.join(root, "python_cell.py")
        shutil.copyfile(here, target)
        os.chmod(target, 0o644)
        os.chmod(root, 0o755)  # the sandbox's unprivileged uid must read it (it can never write it)
        self._harness = root
        return root


def _syntax_problem(code: str, name: str) -> Optional[str]:
    """The syntax error (as Python prints it) if ``code`` does not compile, else None. Parsing runs nothing."""
    try:
        ast.parse(code, _PARSED_AS)
        return None
    except SyntaxError as e:
        e.filename = name
        return "".join(traceback.format_exception_only(type(e), e)).rstrip()
    except (ValueError, RecursionError, MemoryError, OverflowError) as e:  # NUL bytes, pathological nesting
        return f"SyntaxError: the code cannot be compiled ({type(e).__name__}: {str(e)[:200]})"


def _tail(text: str, n: int) -> list[str]:
    return text.rstrip("\n").split("\n")[-n:]


def _last_line(text: str) -> str:
    lines = _tail(text, 1)
    return lines[0].strip() if lines else "?"
