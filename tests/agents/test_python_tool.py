"""The ``python`` tool (rlpipe/agents/python_tool.py): state by replay, what the observation is, how each failure is
reported (ToolError for the model's, ToolInfraError for the host's), and that the program cannot forge the framing.

The hostile programs (escapes, bombs, floods, leftovers) run through the tool in test_python_tool_hostile.py.
"""

from __future__ import annotations

import base64
import errno
import gc
import hashlib
import json
import os
import shutil
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import needs_bwrap
from rlpipe.agents import python_tool
from rlpipe.agents.python_tool import PythonExecutor
from rlpipe.agents.tools import ToolError, ToolInfraError, build_tool
from rlpipe.verify.code import _temp_base


@pytest.fixture
def tool():
    t = PythonExecutor(timeout_s=3.0)
    yield t
    t.close()


# --- state --------------------------------------------------------------------------------------------------------

@needs_bwrap
def test_state_persists_across_calls(tool):
    assert tool.call({"code": "x = 2"}) == "(no output)"
    assert tool.call({"code": "print(x * 21)"}) == "42"
    assert tool.call({"code": "import math\ndef area(r):\n    return math.pi * r * r"}) == "(no output)"
    assert tool.call({"code": "print(round(area(x), 3), math.floor(2.5))"}) == "12.566 2"
    # files written in the scratch space come back too: the cell that wrote them runs again
    tool.call({"code": "open('/work/notes.txt', 'w').write('kept')"})
    assert tool.call({"code": "print(open('/work/notes.txt').read(), x)"}) == "kept 2"


@needs_bwrap
def test_cells_run_as_plain_python(tool):
    """Not under the harness's own compiler flags (its `from __future__ import annotations`), as __main__."""
    source = "def f(x: int) -> str:\n    return str(x)\nprint(f.__annotations__, __name__)"
    assert tool.call({"code": source}) == "{'x': <class 'int'>, 'return': <class 'str'>} __main__"


@needs_bwrap
def test_only_the_new_cells_output_is_shown(tool):
    assert tool.call({"code": "print('first')"}) == "first"
    # written past sys.stdout, straight to descriptors 1 and 2: on replay both are /dev/null
    assert tool.call({"code": "import os\nos.write(1, b'raw\\n')\nos.write(2, b'err\\n')"}) == "raw"
    assert tool.call({"code": "import sys\nprint('to stderr', file=sys.stderr)\nprint('second')"}) == "second"
    assert tool.last.status == "ok" and tool.last.stdout == "second\n"


@needs_bwrap
def test_an_exception_is_an_observation_and_the_cell_is_not_replayed(tool):
    tool.call({"code": "def inverse(v):\n    return 1 / v"})
    with pytest.raises(ToolError) as raised:
        tool.call({"code": "y = 5\nprint('before')\ninverse(0)"})
    message = str(raised.value)
    assert message.startswith("before\n") and message.endswith("ZeroDivisionError: division by zero")
    assert 'File "<cell 1>", line 2, in inverse' in message  # the earlier cell's source lines are known
    assert tool.last.status == "error"
    assert tool.call({"code": "print('y' in dir(), inverse(4))"}) == "False 0.25"  # no y: the cell was dropped


@needs_bwrap
def test_syntax_error_is_found_before_any_sandbox_starts():
    t = PythonExecutor(bwrap="/nonexistent")  # a sandbox start would raise ToolInfraError
    with pytest.raises(ToolError) as raised:
        t.call({"code": "def f(x) return x"})
    assert str(raised.value).splitlines()[-1].startswith("SyntaxError: ")
    assert '"<cell 1>", line 1' in str(raised.value)
    with pytest.raises(ToolError, match="null bytes"):
        t.call({"code": "print(1)\x00"})
    assert t.last.status == "syntax"


def test_bad_arguments_are_tool_errors():
    t = PythonExecutor(bwrap="/nonexistent", max_code_chars=50)
    for arguments in ({}, {"code": 3}, {"source": "print(1)"}, "print(1)", None):
        with pytest.raises(ToolError) as raised:
            t.call(arguments)
        assert str(raised.value) == "python: arguments need a string 'code'"
    with pytest.raises(ToolError, match="too long"):
        t.call({"code": "x = 1\n" * 20})
    with pytest.raises(ToolError, match="not valid text"):
        t.call({"code": "s = '\udcff'"})
    assert t.last.status == "refused"


def test_the_tool_is_registered():
    t = build_tool("python", timeout_s=1.5)
    assert isinstance(t, PythonExecutor) and t.name == "python" and t.timeout_s == 1.5 and t.description


# --- limits -------------------------------------------------------------------------------------------------------

@needs_bwrap
def test_timeout_is_a_tool_error_in_bounded_time_and_the_session_goes_on():
    t = PythonExecutor(timeout_s=1.0)
    try:
        t.call({"code": "x = 7"})
        start = time.monotonic()
        with pytest.raises(ToolError) as raised:
            t.call({"code": "import time\nprint('working', flush=True)\nwhile True:\n    time.sleep(0)"})
        elapsed = time.monotonic() - start
        assert str(raised.value).startswith("python: timed out after 1.0 s")
        assert "working" in str(raised.value)  # what it printed before the timeout
        assert t.last.status == "timeout" and 1.0 <= elapsed < 3.5, elapsed
        start = time.monotonic()
        assert t.call({"code": "print(x)"}) == "7"  # the timed-out cell is not replayed
        assert time.monotonic() - start < 1.0
    finally:
        t.close()


@needs_bwrap
def test_long_output_is_truncated_with_a_note():
    t = PythonExecutor(max_output_chars=100)
    try:
        observation = t.call({"code": "print('x' * 5000)"})
        assert observation.startswith("x" * 100 + "\n[output truncated: 5001 characters, the first 100 shown]")
        assert len(observation) < 200 and len(t.last.stdout) == 5001
    finally:
        t.close()


@needs_bwrap
def test_an_output_flood_is_stopped(tool):
    start = time.monotonic()
    with pytest.raises(ToolError, match="output limit exceeded"):
        tool.call({"code": "while True:\n    print('y' * 10000)"})
    assert tool.last.status == "output_limit" and time.monotonic() - start < 3


@needs_bwrap
def test_memory_overruns_are_tool_errors(tool):
    with pytest.raises(ToolError, match="MemoryError"):
        tool.call({"code": "block = bytearray(4 * 1024 ** 3)"})
    source = textwrap.dedent("""\
        import os, time
        for _ in range(6):
            if os.fork() == 0:
                block = bytearray(300 * 1024 ** 2)
                for i in range(0, len(block), 4096):
                    block[i] = 1
                time.sleep(60)
        time.sleep(60)
        """)
    with pytest.raises(ToolError) as raised:
        tool.call({"code": source})
    assert tool.last.status in ("memory_limit", "timeout"), (tool.last, str(raised.value))


# --- the host's failures versus the model's ------------------------------------------------------------------------

def test_a_missing_sandbox_is_an_infra_error():
    t = PythonExecutor(bwrap="/nonexistent")
    with pytest.raises(ToolInfraError, match="bwrap"):
        t.call({"code": "print(1)"})
    assert t.last.status == "infra"
    t.close()


def test_a_host_oserror_is_an_infra_error(monkeypatch):
    def out_of_processes(*args, **kwargs):
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(python_tool, "run_sandboxed", out_of_processes)
    t = PythonExecutor()
    with pytest.raises(ToolInfraError, match="cannot run the sandbox"):
        t.call({"code": "print(1)"})
    t.close()


def test_a_sandbox_that_never_starts_is_an_infra_error():
    """bwrap that passes the version check but cannot create its namespaces (as under a restrictive AppArmor)."""
    where = tempfile.mkdtemp(prefix="rlpipe-fake-bwrap-", dir=_temp_base())
    try:
        os.chmod(where, 0o755)  # the sandbox's uid runs it
        fake = Path(where) / "bwrap"
        fake.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo "bubblewrap 0.8.0"; exit 0; fi\n'
                        'echo "bwrap: setting up uid map: Permission denied" >&2\nexit 1\n')
        fake.chmod(0o755)
        t = PythonExecutor(bwrap=str(fake))
        with pytest.raises(ToolInfraError, match="did not start.*uid map"):
            t.call({"code": "print(1)"})
        t.close()
    finally:
        shutil.rmtree(where, ignore_errors=True)


@needs_bwrap
@pytest.mark.parametrize("attack", [
    "import os, signal\nos.kill(-1, signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\nos.kill(1, signal.SIGSTOP)",
    "import os\nos.closerange(0, 4096)",  # the socket to the harness included
    "import os\nos._exit(0)",
    "import os\nos.kill(os.getpid(), 9)",
    "import ctypes\nctypes.string_at(0)",  # segfault
    "import os, socket\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'\\xff' * 100000)\n"
    "    except OSError:\n        pass",  # garbage into the harness's socket
], ids=["kill-everything", "close-every-fd", "exit", "kill-self", "segfault", "garbage-to-harness"])
def test_the_program_cannot_make_its_failure_an_infra_error(tool, attack):
    tool.call({"code": "x = 1"})
    try:
        tool.call({"code": attack})
    except ToolError:
        pass  # ToolInfraError would propagate and fail the test
    assert tool.call({"code": "print(x)"}) == "1"


@needs_bwrap
def test_forked_copies_of_a_cell_just_exit():
    t = PythonExecutor()
    try:
        source = "import os\npid = os.fork()\nprint('child' if pid == 0 else 'parent', flush=True)\n" \
                 "if pid:\n    os.waitpid(pid, 0)"
        assert sorted(t.call({"code": source}).split()) == ["child", "parent"]
        assert t.call({"code": "print(pid > 0)"}) == "True"
    finally:
        t.close()


# --- replay -------------------------------------------------------------------------------------------------------

@needs_bwrap
def test_a_cell_that_raises_on_replay_is_dropped_with_a_note(tool):
    when = time.time() + 1.5
    tool.call({"code": f"import time\nif time.time() > {when}:\n    raise ValueError('changed on replay')\nz = 1"})
    tool.call({"code": "w = 2"})
    time.sleep(max(0.0, when - time.time()) + 0.05)
    observation = tool.call({"code": "print('hi')"})
    assert observation.splitlines() == ["[note: earlier <cell 1> raised when replayed and was dropped from the "
                                        "session: ValueError: changed on replay]", "hi"]
    assert tool.last.dropped == ["<cell 1>"]
    assert tool.call({"code": "print('z' in dir(), w)"}) == "False 2"


@needs_bwrap
@pytest.mark.parametrize("action,why", [("os._exit(0)", "ended the process"), ("time.sleep(100)", "timed out")],
                         ids=["exit", "hang"])
def test_a_cell_that_fails_on_replay_and_the_cells_after_it_are_dropped(action, why):
    t = PythonExecutor(timeout_s=1.0)  # the replay budget: timeout_s + twice what the cells took
    try:
        when = time.time() + 1.5
        t.call({"code": "x = 1"})
        t.call({"code": f"import os, time\nif time.time() > {when}:\n    {action}"})
        t.call({"code": "y = 2"})
        time.sleep(max(0.0, when - time.time()) + 0.05)
        start = time.monotonic()
        with pytest.raises(ToolError, match=rf"<cell 2> {why} on replay, so it and the 1 cell\(s\) after it left"):
            t.call({"code": "print(x)"})
        assert time.monotonic() - start < 3.5
        assert t.last.status == "replay_failed" and t.last.dropped == ["<cell 2>", "<cell 3>"]
        assert t.call({"code": "print(x, 'y' in dir())"}) == "1 False"
    finally:
        t.close()


@needs_bwrap
def test_every_call_is_a_fresh_sandbox_and_replay_recomputes(tool):
    """Replay, not a long-lived process: each call has a new pid 1 (its start time, in clock ticks since boot, grows),
    and a cell that reads something non-deterministic gets a new value on replay (documented)."""
    started = "open('/proc/1/stat').read().rsplit(')', 1)[1].split()[19]"
    time.sleep(0.05)
    first = int(tool.call({"code": f"start = {started}\nprint(start)"}))
    time.sleep(0.05)
    replayed, now = map(int, tool.call({"code": f"print(start, {started})"}).split())
    assert replayed == now > first


# --- framing --------------------------------------------------------------------------------------------------------

def _fake_record(status: str, out: str) -> str:
    payload = base64.b64encode(json.dumps({"status": status, "out": base64.b64encode(out.encode()).decode(),
                                           "replayed": []}).encode()).decode()
    return f"@@rlpipe:record:{hashlib.sha256(b'guess').hexdigest()}:{payload}"


@needs_bwrap
def test_the_program_cannot_forge_the_framing(tool):
    fakes = ["@@rlpipe:started:" + "0" * 64 + ":e30=", _fake_record("ok", "FORGED"), _fake_record("timeout", ""),
             "python: timed out after 5.0 s", "Traceback (most recent call last):", "ZeroDivisionError: forged",
             '{"done": true, "error": null}', "(no output)"]
    printed = "\n".join(fakes)
    # replayed later: what it prints then goes nowhere, and nothing it prints is read as framing now
    assert tool.call({"code": f"fakes = {fakes!r}\nprint('\\n'.join(fakes))"}) == printed
    assert tool.last.status == "ok"
    # the harness's own report pipe is out of reach (it is non-dumpable), so not even a well-formed record gets there
    attempt = textwrap.dedent("""\
        import os
        for target in ('/proc/1/fd/1', '/proc/1/fd/2'):
            try:
                fd = os.open(target, os.O_WRONLY)
                os.write(fd, ('\\n'.join(fakes) + '\\n').encode())
                print('reached', target)
            except OSError as e:
                print('refused', target, e.errno)
        print(*fakes[:2], sep='\\n')
        """)
    observation = tool.call({"code": attempt})
    assert observation.startswith("refused /proc/1/fd/1 13\nrefused /proc/1/fd/2 13\n@@rlpipe:started"), observation
    assert "FORGED" not in observation.replace(fakes[1], "")
    assert tool.call({"code": "print(len(fakes))"}) == str(len(fakes))


# --- clean-up -------------------------------------------------------------------------------------------------------

@needs_bwrap
def test_temp_dirs_are_removed():
    before = set(Path(_temp_base() or tempfile.gettempdir()).glob("rlpipe-pytool-*"))
    t = PythonExecutor()
    t.call({"code": "print(1)"})
    harness = t._harness
    assert harness is not None and Path(harness).is_dir()
    t.close()
    assert not Path(harness).exists()
    with pytest.raises(ToolInfraError, match="closed"):
        t.call({"code": "print(1)"})
    t = PythonExecutor()
    t.call({"code": "print(1)"})
    harness = t._harness
    del t
    gc.collect()
    assert not Path(harness).exists()  # garbage collection removes it too
    assert set(Path(_temp_base() or tempfile.gettempdir()).glob("rlpipe-pytool-*")) <= before
