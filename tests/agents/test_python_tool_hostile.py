"""The hostile suite of the code sandbox, run through the ``python`` tool (``PythonExecutor.call``).

The tests are those of ``tests/verify/test_sandbox_hostile.py``, imported here, not copied: the same programs and the
same host-side checks (canaries unchanged, listeners that received nothing, a host sleeper still alive, no process
left behind, the call returning on time). Only the ``verifier`` fixture differs: :class:`ToolVerifier` scores a
completion by running it through the tool, the way a rollout would, and every score uses a fresh tool (a new
rollout), so nothing one hostile program leaves in a session reaches the next test.

How a gold becomes tool calls (each a separate sandbox, so every later call also *replays* the earlier ones):

- asserts (``tests``, MBPP) and ``check`` (HumanEval): call 1 is the program, call 2 the tests (after the gold's
  setup), with stdout and stderr sent to /dev/null as the verifier does for function tasks. CORRECT iff both calls
  return without a ToolError.
- stdin/stdout: per input, a fresh tool; call 1 sets ``sys.stdin`` to the input, call 2 is the program; its stdout is
  compared on the host with the expected output, which never enters the sandbox.
- a ToolError is WRONG (``details``: ``got`` = the message or the output, ``reason``, ``timeout``); a
  ToolInfraError is ERROR; completions are read as the verifier reads them (``extract_code``).

Excluded (``EXCLUDED``, each with its reason) are the tests whose subject is the verifier's judge protocol, which the
tool does not have: there the tests run as ordinary code in the program's own process, so equality hacks and reading
the expected values work by design. ``test_every_other_hostile_test_runs_here`` keeps the list honest.

Run: ``.venv/bin/python -m pytest tests/agents/test_python_tool_hostile.py -q``.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "verify"))  # where test_sandbox_hostile lives

import test_sandbox_hostile as hostile  # noqa: E402
from test_sandbox_hostile import *  # noqa: E402,F401,F403 - the hostile tests, collected again with the tool

from conftest import HAVE_BWRAP  # noqa: E402
from rlpipe.agents.python_tool import PythonExecutor  # noqa: E402
from rlpipe.agents.tools import ToolError, ToolInfraError  # noqa: E402
from rlpipe.verify.code import extract_code, normalise_output, task_from_gold  # noqa: E402
from rlpipe.verify.types import Verdict, VerdictKind  # noqa: E402

EXCLUDED = {
    "test_equality_hacks_are_wrong":
        "the tool runs the asserts in the program's own process: __eq__ hacks defeat them by design (judge protocol)",
    "test_equality_hack_in_humaneval_check":
        "the same for check(): keeping tests out of the program's process is the verifier judge's job, not the tool's",
    "test_assert_tests_cannot_be_read":
        "asserts and check() run in the program's process here, so their expected values are readable by design",
    "test_temp_dirs_are_removed":
        "checks the verifier's own temp and harness dirs; the tool's: test_python_tool.py::test_temp_dirs_are_removed",
}
for _name in EXCLUDED:
    del globals()[_name]

# The program's own stdout and stderr are not the tests' output: /dev/null, as in the verifier's function tasks.
_QUIET = "__import__('sys').stdout = __import__('sys').stderr = open(__import__('os').devnull, 'w')\n"


class ToolVerifier:
    """``score(completion, gold) -> Verdict`` through ``PythonExecutor.call``; built with CodeVerifier's keywords
    (``test_timeout_s`` becomes the tool's per-call ``timeout_s``), so it also stands in for ``CodeVerifier`` in the
    hostile tests that build their own."""

    def __init__(self, *, timeout_s: float = 30.0, test_timeout_s: float = 10.0, memory_mb: int = 1024,
                 total_memory_mb: int = 2048, max_output_bytes: int = 1 << 20, max_processes: int = 32,
                 tmpfs_mb: int = 64, max_code_chars: int = 20000, **ignored: Any):
        del timeout_s, ignored  # the whole-sample limit of the verifier: each tool call has test_timeout_s
        self.options = dict(timeout_s=test_timeout_s, memory_mb=memory_mb, total_memory_mb=total_memory_mb,
                            max_output_chars=max_output_bytes, max_processes=max_processes, tmpfs_mb=tmpfs_mb,
                            max_code_chars=max_code_chars)
        self.max_code_chars = max_code_chars

    def probe(self) -> None:
        verdict = self.score(hostile.GOOD_F, hostile.ASSERT_GOLD)
        assert verdict.kind is VerdictKind.CORRECT, verdict

    def score(self, completion, gold: dict) -> Verdict:
        task, expected = task_from_gold(gold)  # a gold without tests raises ValueError, as in the verifier
        if isinstance(completion, bytes):
            try:
                completion = completion.decode("utf-8")
            except UnicodeDecodeError:
                return _verdict("parse_fail", reason="not UTF-8 text")
        code = completion
        if len(completion) <= 8 * self.max_code_chars:  # longer ones go to the tool as they are: it refuses them
            code, origin = extract_code(completion)
            if code is None:
                return _verdict("parse_fail", reason=origin)
        if task["mode"] == "stdio":
            return self._stdio(code, task["stdin"], expected)
        if task["mode"] == "asserts":
            tests = "\n".join(filter(None, [task["setup"], *task["tests"]]))
        else:
            tests = f"{task['test']}\ncheck({task['entry_point']})"
        _, failed = self._session([code, _QUIET + tests])
        return failed or _verdict("correct")

    def _stdio(self, code: str, inputs: list[str], expected: list[str]) -> Verdict:
        for i, (text, want) in enumerate(zip(inputs, expected)):
            stdin = f"__import__('sys').stdin = __import__('io').StringIO({text!r})"
            got, failed = self._session([stdin, code])
            if failed:
                return failed
            if normalise_output(got) != normalise_output(want):
                return _verdict("wrong", failed=i, reason="wrong output", got=got)
        return _verdict("correct")

    def _session(self, cells: list[str]) -> tuple[str, Optional[Verdict]]:
        """Run ``cells`` as successive calls of one fresh tool: (the last call's stdout, None) or (_, the verdict of
        the first call that failed)."""
        tool = PythonExecutor(**self.options)
        try:
            for cell in cells:
                tool.call({"code": cell})
            return tool.last.stdout, None
        except ToolError as e:
            status = tool.last.status
            reason = status if status in ("timeout", "output_limit", "memory_limit") else str(e)
            return "", _verdict("wrong", got=str(e), reason=reason, timeout=status == "timeout")
        except ToolInfraError as e:
            return "", _verdict("error", error=str(e))
        finally:
            tool.close()


def _verdict(kind: str, **details) -> Verdict:
    return Verdict(VerdictKind(kind), 1.0 if kind == "correct" else 0.0, details)


@pytest.fixture(scope="module")
def verifier() -> ToolVerifier:
    v = ToolVerifier(timeout_s=hostile.TIMEOUT_S, test_timeout_s=hostile.TEST_TIMEOUT_S, memory_mb=512,
                     total_memory_mb=1024, max_output_bytes=1 << 16, max_processes=hostile.MAX_PROCESSES,
                     tmpfs_mb=hostile.TMPFS_MB)
    if HAVE_BWRAP:
        v.probe()
    return v


@pytest.fixture(autouse=True)
def _tool_instead_of_code_verifier(monkeypatch):
    """Hostile tests that build their own CodeVerifier (e.g. with a longer limit) get a ToolVerifier instead."""
    monkeypatch.setattr(hostile, "CodeVerifier", ToolVerifier)


def test_every_other_hostile_test_runs_here():
    """Each excluded name is a real hostile test, and every hostile test not excluded is collected here."""
    originals = {name for name, obj in inspect.getmembers(hostile, inspect.isfunction) if name.startswith("test_")}
    here = {name for name, obj in globals().items() if name.startswith("test_") and callable(obj)}
    assert set(EXCLUDED) <= originals
    assert originals - set(EXCLUDED) <= here
