"""Code verifier: runs a completion's program against the task's tests in a bubblewrap sandbox.

Three gold formats (``gold`` is the task's dict):

- ``tests``: a list of assert statements (MBPP), with optional ``setup`` / ``test_setup_code`` run after the program;
- ``test`` (source defining ``check(candidate)``) + ``entry_point`` (HumanEval), optional ``prompt`` whose helper
  definitions (e.g. HumanEval/32's ``poly``) the tests then use instead of the program's copies;
- ``stdin`` + ``expected_stdout``: lists of inputs and outputs, compared line by line without trailing whitespace.

Why the verdict cannot be forged (docs/sandbox.md has the long form). The program and the judge never share a
process, and nothing the judge must keep secret enters the program's process:

- Inside the sandbox the judge (trusted code only) is pid 1, so the kernel drops the program's signals to it, and it
  is non-dumpable, so the program (same uid, no capabilities, ptrace refused by seccomp anyway) can neither trace it
  nor open its ``/proc/1/{mem,fd,environ}``. It forks the program's process *before* reading the task (the tests and
  a random per-run key) from stdin to EOF: that process's copy of the judge's memory holds neither, and its only
  links to the judge are two pipes.
- Function tests (asserts, ``check``) run in the judge. The program's functions are proxies: a call sends its
  arguments down a pipe and gets back the return value, encoded as plain data (ints, floats, strings, lists,
  dicts, sets, ...). Any other object stays in the program and comes back as an opaque handle that equals only
  itself, which defeats ``__eq__``-always-true objects. The expected values and the test source never leave the
  judge, so the program cannot read them, even by inspecting stack frames or the garbage collector.
- Stdin/stdout tests: the expected outputs never enter the sandbox. The judge runs the program once per input and
  returns what it printed; the host compares.
- The judge's report reaches the host on stdout, authenticated with HMAC-SHA256 under the run's key. No process of
  the program's holds that pipe, but soundness does not depend on it: without the key no record can be forged. A
  report that is missing or fails authentication is WRONG once the judge has announced (authenticated) that the
  program started, and ERROR before that (the sandbox itself failed, which the program had no chance to cause).

The in-sandbox half is ``rlpipe.verify.judge``: it runs under the system ``/usr/bin/python3`` with only the standard
library; the host copies it into a read-only directory mounted in the sandbox. This module is the host half.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import warnings
from typing import TYPE_CHECKING, Any, Optional

from rlpipe.verify.judge import JUDGE_DIR, PROGRAM_DIR, SANDBOX_PYTHON

if TYPE_CHECKING:
    from rlpipe.verify.sandbox import SandboxResult
    from rlpipe.verify.types import Verdict

_MARK = re.compile(rb"@@rlpipe:(started|record):([0-9a-f]{64}):([A-Za-z0-9+/=]*)")
_FENCE = re.compile(r"^[ \t]{0,3}```[ \t]*([^\s`]*)[^\n`]*$")
_PY_TAGS = {"", "python", "py", "python3", "py3"}
# The host parses programs only to check them; their compile-time warnings (invalid escapes...) are not ours to log.
_PARSED_AS = "<rlpipe-program>"
warnings.filterwarnings("ignore", module=re.escape(_PARSED_AS))


# ---------------------------------------------------------------------------------------------------------------
# Completion -> program
# ---------------------------------------------------------------------------------------------------------------

def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag, body) of every ``` fenced block, in order; an unclosed last fence runs to the end."""
    blocks, tag, body = [], None, []
    for line in text.split("\n"):
        fence = _FENCE.match(line)
        if tag is None:
            if fence:
                tag, body = fence.group(1).lower(), []
        elif fence and not fence.group(1) and line.strip() == "```":
            blocks.append((tag, "\n".join(body)))
            tag = None
        else:
            body.append(line)
    if tag is not None:
        blocks.append((tag, "\n".join(body)))
    return blocks


def extract_code(completion: str) -> tuple[Optional[str], str]:
    """(program, where it came from): the last ```python (or untagged ```) block; else the whole completion if it
    parses as Python; else (None, reason)."""
    blocks = [body for tag, body in fenced_blocks(completion) if tag in _PY_TAGS]
    if blocks:
        return blocks[-1], "fenced"
    try:
        ast.parse(completion, _PARSED_AS)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as e:
        return None, f"no fenced block and the completion is not Python ({type(e).__name__})"
    return completion, "whole"


# ---------------------------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------------------------

def task_from_gold(gold: dict) -> tuple[dict, Optional[list[str]]]:
    """(what the sandbox is told, expected stdout list or None). Raises ValueError for a gold without tests:
    a code task without tests must never be scored."""
    if gold.get("tests") or gold.get("test_list"):
        tests = gold.get("tests") or gold.get("test_list")
        if not isinstance(tests, list) or not all(isinstance(t, str) and t.strip() for t in tests):
            raise ValueError("gold 'tests' must be a non-empty list of assert statement strings")
        for t in tests:
            _check_gold_source(t)
        setup = gold.get("setup", gold.get("test_setup_code", "")) or ""
        return {"mode": "asserts", "tests": tests, "setup": setup}, None
    if gold.get("test") and gold.get("entry_point"):
        _check_gold_source(gold["test"])
        return {"mode": "humaneval", "test": gold["test"], "entry_point": str(gold["entry_point"]),
                "prompt": gold.get("prompt", "")}, None
    if gold.get("stdin") is not None or gold.get("expected_stdout") is not None:
        inputs, outputs = gold.get("stdin"), gold.get("expected_stdout")
        if not isinstance(inputs, list) or not isinstance(outputs, list) or not inputs or \
                len(inputs) != len(outputs) or not all(isinstance(x, str) for x in inputs + outputs):
            raise ValueError("gold 'stdin' and 'expected_stdout' must be equally long non-empty lists of strings")
        return {"mode": "stdio", "stdin": inputs}, outputs
    raise ValueError("code gold needs 'tests' (asserts), 'test' + 'entry_point' (HumanEval) or 'stdin' + "
                     f"'expected_stdout'; got keys {sorted(gold)}")


def _check_gold_source(source: str) -> None:
    try:
        ast.parse(source, _PARSED_AS)
    except (SyntaxError, ValueError) as e:  # the gold's fault: raised, never scored
        raise ValueError(f"gold test does not compile: {e}") from None


def normalise_output(text: str) -> list[str]:
    """Lines without trailing whitespace, trailing empty lines dropped."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def read_reports(stdout: bytes, key: bytes) -> dict[str, dict]:
    """The judge's authenticated reports in the sandbox's stdout; lines that fail the HMAC are ignored."""
    found: dict[str, dict] = {}
    for m in _MARK.finditer(stdout):
        kind, mac, payload = m.group(1), m.group(2), m.group(3)
        good = hmac.new(key, kind + b":" + payload, hashlib.sha256).hexdigest().encode()
        if hmac.compare_digest(mac, good) and kind.decode() not in found:
            found[kind.decode()] = json.loads(base64.b64decode(payload))
    return found


_HARNESS_FILES = ("judge.py",)  # what the sandbox imports: the judge, standard library only


def _temp_base() -> Optional[str]:
    """Where the per-call and harness dirs go: the usual temp dir, unless one of its ancestors is closed to other
    users (a TMPDIR under a private directory), which the sandbox's unprivileged uid must traverse; then /tmp."""
    import tempfile

    path = os.path.abspath(tempfile.gettempdir())
    while True:
        try:
            if not os.stat(path).st_mode & 0o001:
                return "/tmp"
        except OSError:
            return "/tmp"
        if path == os.path.dirname(path):
            return None  # the default is fine
        path = os.path.dirname(path)


class CodeVerifier:
    """Scores a completion's program against gold tests in a bubblewrap sandbox (see the module docstring).

    Options (keyword arguments):
        timeout_s: wall-clock limit of one sample, sandbox start-up included.
        test_timeout_s: limit of one test (one assert, one check(), one stdin run), program start-up included.
        memory_mb: address-space limit of each process. total_memory_mb: resident memory of all of them together.
        max_output_bytes: a stdin run's stdout at most this long. max_message_bytes: one return value (encoded).
        max_processes, max_file_mb, max_open_files, tmpfs_mb: the other sandbox limits.
        max_source_bytes: longer programs are WRONG without running.
        run_as_uid: the unprivileged uid the sandbox runs as when the verifier runs as root.
        bwrap: path of the bwrap executable. seccomp: refuse ptrace, mount, io_uring, bpf, ... (sandbox.py).
        probe: run a trivial sandbox at construction and raise SandboxUnavailable if it fails.
        correct_reward, wrong_reward, parse_fail_reward: rewards of the three scored verdicts.
    """

    def __init__(self, *, timeout_s: float = 30.0, test_timeout_s: float = 10.0, memory_mb: int = 1024,
                 total_memory_mb: int = 2048, max_output_bytes: int = 1 << 20, max_message_bytes: int = 16 << 20,
                 max_processes: int = 32, max_file_mb: int = 16, max_open_files: int = 256, tmpfs_mb: int = 64,
                 max_source_bytes: int = 256 << 10, run_as_uid: Optional[int] = 65534, bwrap: Optional[str] = None,
                 seccomp: bool = True, probe: bool = False, correct_reward: float = 1.0, wrong_reward: float = 0.0,
                 parse_fail_reward: float = 0.0):
        import threading

        from rlpipe.verify.sandbox import SandboxLimits

        if test_timeout_s <= 0 or timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        self.timeout_s, self.test_timeout_s = float(timeout_s), float(test_timeout_s)
        self.max_output_bytes, self.max_source_bytes = int(max_output_bytes), int(max_source_bytes)
        self.max_message_bytes = int(max_message_bytes)
        self.limits = SandboxLimits(wall_s=self.timeout_s, cpu_s=int(self.timeout_s) + 1, memory_mb=memory_mb,
                                    total_memory_mb=total_memory_mb, max_processes=max_processes,
                                    max_file_mb=max_file_mb, max_open_files=max_open_files, tmpfs_mb=tmpfs_mb)
        self.run_as_uid, self.bwrap, self.seccomp = run_as_uid, bwrap, seccomp
        self.correct_reward, self.wrong_reward = correct_reward, wrong_reward
        self.parse_fail_reward = parse_fail_reward
        here = os.path.dirname(os.path.abspath(__file__))
        self._harness = {}
        for name in _HARNESS_FILES:
            with open(os.path.join(here, name), encoding="utf-8") as f:
                self._harness[name] = f.read()
        self._harness_path: Optional[str] = None
        self._lock = threading.Lock()
        if probe:
            self.probe()

    def probe(self) -> None:
        """Run a trivial program in the sandbox; raise SandboxUnavailable with the reason if that fails."""
        from rlpipe.verify.sandbox import SandboxUnavailable
        from rlpipe.verify.types import VerdictKind

        verdict = self.score("def f():\n    return 1\n", {"tests": ["assert f() == 1"]})
        if verdict.kind is not VerdictKind.CORRECT:
            raise SandboxUnavailable(f"the code sandbox does not work here: {verdict.details}")

    def _verdict_of(self, kind: str, **details) -> "Verdict":
        from rlpipe.verify.types import Verdict, VerdictKind

        reward = {"correct": self.correct_reward, "wrong": self.wrong_reward,
                  "parse_fail": self.parse_fail_reward}.get(kind, 0.0)
        return Verdict(VerdictKind(kind), reward, details)

    def score(self, completion: str, gold: dict[str, Any]) -> "Verdict":
        import dataclasses
        import secrets
        import shutil
        import tempfile

        from rlpipe.verify.sandbox import SandboxUnavailable, run_sandboxed

        task, expected = task_from_gold(gold)
        if isinstance(completion, bytes):
            try:
                completion = completion.decode("utf-8")
            except UnicodeDecodeError:
                return self._verdict_of("parse_fail", reason="not UTF-8 text")
        if len(completion) > 8 * self.max_source_bytes:
            return self._verdict_of("wrong", reason="completion too long", chars=len(completion))
        code, origin = extract_code(completion)
        if code is None:
            return self._verdict_of("parse_fail", reason=origin)
        try:
            source = code.encode("utf-8")
        except UnicodeEncodeError:
            return self._verdict_of("wrong", reason="program is not encodable text", origin=origin)
        if len(source) > self.max_source_bytes:
            return self._verdict_of("wrong", reason="program too long", bytes=len(source), origin=origin)
        try:
            ast.parse(source, _PARSED_AS)
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as e:
            return self._verdict_of("wrong", reason="program does not compile",
                                    error=f"{type(e).__name__}: {e}"[:300])
        key = secrets.token_bytes(32)
        task.update(key=key.hex(), timeout_s=max(self.timeout_s - 0.5, 0.1), test_timeout_s=self.test_timeout_s,
                    max_output_bytes=self.max_output_bytes, max_message_bytes=self.max_message_bytes)
        n_out = len(task.get("stdin", ())) + 1
        limits = dataclasses.replace(self.limits, max_stdout_bytes=2 * n_out * self.max_output_bytes + (1 << 20))
        workdir = None
        try:
            harness = self._harness_dir()
            # unique: safe for concurrent calls and processes
            workdir = tempfile.mkdtemp(prefix="rlpipe-code-", dir=_temp_base())
            os.chmod(workdir, 0o755)  # the sandbox's unprivileged uid must read it (it can never write it)
            program = os.path.join(workdir, "main.py")
            with open(program, "wb") as f:
                f.write(source)
            os.chmod(program, 0o644)
            boot = (f"import sys; sys.path.insert(0, {JUDGE_DIR!r}); from rlpipe.verify.judge import judge_main; "
                    f"judge_main()")
            result = run_sandboxed([SANDBOX_PYTHON, "-I", "-B", "-S", "-c", boot], stdin=json.dumps(task).encode(),
                                   limits=limits, ro_binds=[(harness, JUDGE_DIR), (workdir, PROGRAM_DIR)],
                                   run_as_uid=self.run_as_uid, bwrap=self.bwrap, seccomp=self.seccomp,
                                   as_pid_1=True)
        except SandboxUnavailable as e:
            return self._verdict_of("error", error=str(e))
        except OSError as e:  # host trouble (no temp dir, out of pids or fds): retried, never scored
            return self._verdict_of("error", error=f"cannot run the sandbox: {e}")
        finally:
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)
        n_tests = len(task["tests"]) if task["mode"] == "asserts" else 1
        return self._verdict(result, read_reports(result.stdout, key), expected, n_tests)

    def _harness_dir(self) -> str:
        """A read-only copy of the harness (this package's judge.py) byte-compiled by the
        sandbox's python, so that each sandbox skips compiling it; one per verifier, removed with it."""
        import shutil
        import tempfile
        import weakref

        with self._lock:
            if self._harness_path and os.path.isdir(self._harness_path):
                return self._harness_path
            root = tempfile.mkdtemp(prefix="rlpipe-harness-", dir=_temp_base())
            weakref.finalize(self, shutil.rmtree, root, True)
            package = os.path.join(root, "rlpipe", "verify")
            os.makedirs(package)
            files = {os.path.join(root, "rlpipe", "__init__.py"): "", os.path.join(package, "__init__.py"): ""}
            files.update({os.path.join(package, name): text for name, text in self._harness.items()})
            for path, text in files.items():
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
            if os.access(SANDBOX_PYTHON, os.X_OK):
                subprocess.run([SANDBOX_PYTHON, "-I", "-m", "compileall", "-q", root], capture_output=True,
                               timeout=120, check=False)
            for where, dirs, names in os.walk(root):
                os.chmod(where, 0o755)
                for name in names:
                    os.chmod(os.path.join(where, name), 0o644)
            self._harness_path = root
            return root

    def _verdict(self, result: "SandboxResult", reports: dict, expected: Optional[list[str]],
                 n_tests: int) -> "Verdict":
        base = {"wall_s": round(result.wall_s, 3)}
        record = reports.get("record")
        if record is not None and "gold_error" in record:
            return self._verdict_of("error", **base, error="the gold tests fail on their own",
                                    gold_error=record["gold_error"])
        if record is not None and "infra_error" in record:
            return self._verdict_of("error", **base, error=record["infra_error"])
        if record is None:
            if "started" not in reports:  # no program code ran: the sandbox itself failed
                return self._verdict_of("error", **base, error="the sandbox did not start",
                                        exit_code=result.exit_code, timed_out=result.timed_out,
                                        stderr=result.stderr[-1500:].decode("utf-8", "replace"))
            why = ("timeout" if result.timed_out else "output_limit" if result.output_overflow else
                   "memory_limit" if result.memory_exceeded else "judge ended without a report")
            return self._verdict_of("wrong", **base, reason=why, timeout=result.timed_out)
        if expected is None:
            tests = record.get("tests", [])
            failed = [t for t in tests if not t.get("ok")]
            if not failed and len(tests) == n_tests:
                return self._verdict_of("correct", **base, tests_passed=len(tests))
            first = failed[0] if failed else {"name": "?", "why": "missing results"}
            return self._verdict_of("wrong", **base, tests_passed=sum(1 for t in tests if t.get("ok")),
                                    failed=first.get("name"), reason=first.get("why"),
                                    timeout=first.get("why") == "timeout")
        runs = record.get("runs", [])
        for i, want in enumerate(expected):
            if i >= len(runs):
                return self._verdict_of("wrong", **base, tests_passed=i, failed=i, reason="not run")
            run = runs[i]
            if run.get("timeout") or run.get("overflow") or run.get("exit") != 0:
                why = "timeout" if run.get("timeout") else "output_limit" if run.get("overflow") else \
                    f"exit code {run.get('exit')}"
                return self._verdict_of("wrong", **base, tests_passed=i, failed=i, reason=why,
                                        timeout=bool(run.get("timeout")), stderr=str(run.get("err", ""))[-500:])
            got = base64.b64decode(run.get("out", "")).decode("utf-8", "replace")
            if normalise_output(got) != normalise_output(want):
                return self._verdict_of("wrong", **base, tests_passed=i, failed=i, reason="wrong output", got=got[:300])
        return self._verdict_of("correct", **base, tests_passed=len(expected))
