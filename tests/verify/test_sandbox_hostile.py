"""Hostile programs against the code verifier's sandbox, each checked from the host side.

Every program here tries to cheat, escape or hurt the host. Each test asserts the verdict *and* what the host can
observe on its own: canary files unchanged, listeners that received nothing, a sleeper process still alive, no
process left behind (a marker string in every cmdline the program starts), the call returning on time.

Probes (``_probe``) are stdin/stdout programs whose expected output is ``ESCAPED``: they print it only if their
attack worked, so a CORRECT verdict would mean an escape. They print ``BLOCKED ...`` when the attack fails, and the
tests check that line, so a program that merely crashed cannot make a test pass.

Run: ``.venv/bin/python -m pytest tests/verify/test_sandbox_hostile.py -v`` (docs/sandbox.md).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from conftest import HAVE_BWRAP, REPO, needs_bwrap
from rlpipe.verify.code import CodeVerifier
from rlpipe.verify.types import VerdictKind

TIMEOUT_S, TEST_TIMEOUT_S = 6.0, 2.0
MAX_PROCESSES, TMPFS_MB = 24, 16

ASSERT_GOLD = {"tests": ["assert f(2) == 4", "assert f(5) == 10"]}
GOOD_F = "def f(x):\n    return 2 * x\n"
PROBE_GOLD = {"stdin": [""], "expected_stdout": ["ESCAPED"]}


@pytest.fixture(scope="module")
def verifier() -> CodeVerifier:
    v = CodeVerifier(timeout_s=TIMEOUT_S, test_timeout_s=TEST_TIMEOUT_S, memory_mb=512, total_memory_mb=1024,
                     max_output_bytes=1 << 16, max_processes=MAX_PROCESSES, tmpfs_mb=TMPFS_MB)
    if HAVE_BWRAP:
        v.probe()
    return v


def _marker() -> str:
    return f"rlpipe-hostile-{uuid.uuid4().hex}"


def _processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains ``marker`` (the test's own process excluded)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _sleeper_source(marker: str) -> str:
    """Python that replaces the current process by a long sleep whose cmdline carries ``marker``."""
    return (f"os.execv('/usr/bin/python3', ['python3', '-c', 'import time\\nwhile True: time.sleep(1)', "
            f"{marker!r}])")


def _score(verifier, source: str, gold: dict):
    t0 = time.monotonic()
    verdict = verifier.score(source, gold)
    return verdict, time.monotonic() - t0


def _probe(verifier, body: str):
    """Run an attack as a stdin/stdout program; it prints ESCAPED on success, BLOCKED ... on failure."""
    source = "import os, sys\ntry:\n" + textwrap.indent(textwrap.dedent(body), "    ") + \
        "\n    print('ESCAPED')\nexcept BaseException as e:\n    print('BLOCKED', type(e).__name__, e)\n"
    verdict, elapsed = _score(verifier, source, PROBE_GOLD)
    assert verdict.kind is VerdictKind.WRONG, verdict
    assert verdict.details.get("got", "").startswith("BLOCKED"), verdict.details  # it ran, and was stopped
    return verdict


def _assert_wrong_in_time(verdict, elapsed, *, timeout: bool = False):
    assert verdict.kind is VerdictKind.WRONG, verdict
    assert elapsed < TIMEOUT_S + 3, elapsed
    if timeout:
        assert verdict.details.get("timeout") is True, verdict.details


pytestmark = needs_bwrap


# --- controls: correct programs pass in every mode, so the suite cannot pass by failing everything ---------------

def test_control_correct_programs_pass(verifier):
    assert verifier.score(GOOD_F, ASSERT_GOLD).kind is VerdictKind.CORRECT
    assert verifier.score(f"```python\n{GOOD_F}```", ASSERT_GOLD).kind is VerdictKind.CORRECT
    he = {"test": "def check(candidate):\n    assert candidate(3) == 6\n", "entry_point": "f"}
    assert verifier.score(GOOD_F, he).kind is VerdictKind.CORRECT
    io = {"stdin": ["3\n", "7\n"], "expected_stdout": ["6\n", "14"]}
    assert verifier.score("print(2 * int(input()))", io).kind is VerdictKind.CORRECT
    assert verifier.score(GOOD_F + "import os\nos.makedirs('/work/a/b')\nopen('/tmp/x', 'w').write('x')\n",
                          ASSERT_GOLD).kind is VerdictKind.CORRECT  # its own scratch space is writable


def test_control_probe_detects_an_escape(verifier):
    """The probe pattern itself: an 'attack' that trivially works is scored CORRECT (so WRONG means blocked)."""
    verdict = verifier.score("print('ESCAPED')", PROBE_GOLD)
    assert verdict.kind is VerdictKind.CORRECT


# --- time: busy loops, sleeping, ignoring signals, catching the timeout --------------------------------------------

@pytest.mark.parametrize("source", [
    "while True:\n    pass\n",  # at import
    "def f(x):\n    while True:\n        pass\n",
    "import time\ndef f(x):\n    time.sleep(10**6)\n",
    "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM, signal.SIGXCPU):\n"
    "    signal.signal(s, signal.SIG_IGN)\ndef f(x):\n    while True:\n        pass\n",
    "def f(x):\n    while True:\n        try:\n            while True:\n                pass\n"
    "        except BaseException:\n            continue\n",  # catches whatever 'timeout exception' it can
    "import threading\ndef f(x):\n    threading.Event().wait()\n",
], ids=["busy-import", "busy-call", "sleep-forever", "ignore-signals", "catch-timeout", "block-on-event"])
def test_time_wasters_time_out(verifier, source):
    verdict, elapsed = _score(verifier, source, ASSERT_GOLD)
    _assert_wrong_in_time(verdict, elapsed, timeout=True)
    assert elapsed < TEST_TIMEOUT_S + 2


def test_sleeping_stdin_program_times_out(verifier):
    verdict, elapsed = _score(verifier, "import time\ntime.sleep(10**6)", {"stdin": ["1"], "expected_stdout": ["1"]})
    _assert_wrong_in_time(verdict, elapsed, timeout=True)


def test_reading_beyond_stdin_gets_eof_not_a_hang(verifier):
    verdict, elapsed = _score(verifier, "def f(x):\n    return int(input())\n", ASSERT_GOLD)
    assert verdict.kind is VerdictKind.WRONG and elapsed < 3 and "EOFError" in verdict.details["reason"]


def test_infinite_recursion_is_wrong(verifier):
    verdict, _ = _score(verifier, "def f(x):\n    return f(x)\n", ASSERT_GOLD)
    assert verdict.kind is VerdictKind.WRONG and "RecursionError" in verdict.details["reason"]


# --- memory -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("source", [
    "x = bytearray(8 * 1024 ** 3)\n",
    "def f(x):\n    a = []\n    while True:\n        a.append(' ' * 10 ** 6)\n",
    "import mmap\nm = mmap.mmap(-1, 6 * 1024 ** 3)\nm[::4096] = b'x' * (6 * 1024 ** 3 // 4096)\n",
], ids=["one-big-block", "grow-until-dead", "mmap"])
def test_memory_bombs_fail(verifier, source):
    verdict, elapsed = _score(verifier, source, ASSERT_GOLD)
    _assert_wrong_in_time(verdict, elapsed)


def test_memory_bomb_across_processes_is_stopped(verifier):
    """RLIMIT_AS bounds one process; 12 x 400 MB is stopped by the parent's watchdog on total resident memory."""
    marker = _marker()
    source = textwrap.dedent(f"""\
        import os, time
        for _ in range(12):
            if os.fork() == 0:
                block = bytearray(400 * 1024 ** 2)
                for i in range(0, len(block), 4096):
                    block[i] = 1
                {_sleeper_source(marker)}
        time.sleep(60)
        """)
    verdict, elapsed = _score(verifier, source, ASSERT_GOLD)
    _assert_wrong_in_time(verdict, elapsed)
    assert verdict.details["reason"] in ("memory_limit", "timeout", "judge ended without a report") or \
        "load" == verdict.details.get("failed"), verdict.details
    assert not _processes_with(marker)


# --- processes: fork storms, daemons holding pipes -----------------------------------------------------------------

def test_fork_storm_is_bounded_and_cleaned_up(verifier):
    marker = _marker()
    body = f"""\
        n = 0
        while True:
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                {_sleeper_source(marker)}
            n += 1
        raise RuntimeError(f"forked {{n}}")
        """
    verdict = _probe(verifier, body)
    forked = int(verdict.details["got"].split("forked ")[1].split()[0])
    assert 0 < forked < MAX_PROCESSES
    assert not _processes_with(marker)


def test_unbounded_fork_bomb_fails_and_leaves_nothing(verifier):
    marker = _marker()
    source = f"import os\nos.environ['M'] = {marker!r}\nwhile True:\n    try:\n        os.fork()\n" \
             f"    except OSError:\n        pass\n"
    verdict, elapsed = _score(verifier, source, ASSERT_GOLD)
    _assert_wrong_in_time(verdict, elapsed)
    assert not _processes_with(marker)


def test_thread_bomb_is_bounded(verifier):
    body = """\
        import threading
        threads = []
        while True:
            t = threading.Thread(target=threading.Event().wait, daemon=True)
            t.start()
            threads.append(t)
        """
    _probe(verifier, body)


@pytest.mark.parametrize("hold", ["/proc/1/fd/1", "/proc/1/fd/2", None])
def test_orphaned_daemon_holding_pipes_does_not_delay_or_survive(verifier, hold):
    """Double fork + setsid, stdout kept open (the report pipe itself when reachable): the call still returns at
    once with the right verdict, and the daemon is gone afterwards."""
    marker = _marker()
    # As root the sandbox cannot reopen bwrap's pipes (root owns them, mode 0600); as a normal user it can.
    reopen = f"fd = os.open({hold!r}, os.O_WRONLY); os.dup2(fd, 1); os.dup2(fd, 2)" if hold else "pass"
    source = GOOD_F + textwrap.dedent(f"""\
        import os
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                try:
                    {reopen}
                except OSError:
                    pass
                {_sleeper_source(marker)}
            os._exit(0)
        """)
    verdict, elapsed = _score(verifier, source, ASSERT_GOLD)
    assert verdict.kind is VerdictKind.CORRECT, verdict
    assert elapsed < 3, elapsed
    assert not _processes_with(marker)


def test_daemon_holding_stdout_of_a_stdin_program(verifier):
    marker = _marker()
    source = textwrap.dedent(f"""\
        import os, sys
        print(int(input()) * 2)
        sys.stdout.flush()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                {_sleeper_source(marker)}
        """)
    verdict, elapsed = _score(verifier, source, {"stdin": ["4", "5"], "expected_stdout": ["8", "10"]})
    assert verdict.kind is VerdictKind.CORRECT, verdict
    assert elapsed < 3, elapsed
    assert not _processes_with(marker)


def test_subprocess_shell_sleepers_are_killed(verifier):
    marker = _marker()
    source = GOOD_F + f"import subprocess\nsubprocess.Popen(['/bin/sh', '-c', 'sleep 300; : {marker}'], " \
                      f"start_new_session=True)\n"
    verdict, _ = _score(verifier, source, ASSERT_GOLD)
    assert verdict.kind is VerdictKind.CORRECT, verdict
    assert not _processes_with(marker)


# --- output floods --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["/proc/1/fd/1", "/proc/1/fd/2"])
def test_flood_of_the_report_pipes_is_cut(verifier, target):
    """As a normal user the program can reopen bwrap's stdout/stderr and flood them: the host reads at most
    max_stdout_bytes, then kills. As root it cannot even open them (root's pipes, mode 0600)."""
    source = f"import os\nfd = os.open({target!r}, os.O_WRONLY)\nwhile True:\n    os.write(fd, b'x' * 65536)\n"
    verdict, elapsed = _score(verifier, source, ASSERT_GOLD)
    _assert_wrong_in_time(verdict, elapsed)
    assert elapsed < 3


def test_flood_of_stdout_in_a_stdin_program_is_cut(verifier):
    verdict, elapsed = _score(verifier, "while True:\n    print('y' * 10000)\n",
                              {"stdin": [""], "expected_stdout": ["y"]})
    _assert_wrong_in_time(verdict, elapsed)
    assert verdict.details["reason"] == "output_limit" and elapsed < 3


def test_printing_in_a_function_task_is_harmless(verifier):
    source = "def f(x):\n    import sys\n    for _ in range(2000):\n        sys.stdout.write('z' * 10000)\n" \
             "        sys.stderr.write('z' * 10000)\n    return 2 * x\n"
    assert verifier.score(source, ASSERT_GOLD).kind is VerdictKind.CORRECT


# --- the disk -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["/work", "/tmp", "/dev/shm"])
def test_filling_the_scratch_space_stops_at_its_size(verifier, where):
    body = f"""\
        written = 0
        try:
            for i in range(10 ** 6):
                with open('{where}/fill%d' % i, 'wb') as out:
                    out.write(b'x' * (1 << 20))
                written += 1
        except OSError as e:
            raise RuntimeError(f"stopped after {{written}} MB: {{e.strerror}}")
        """
    verdict = _probe(verifier, body)
    mb = int(verdict.details["got"].split("after ")[1].split()[0])
    assert mb <= TMPFS_MB and "No space left" in verdict.details["got"]


def test_one_huge_file_hits_the_file_size_limit(verifier):
    source = "import os\nwith open('/work/big', 'wb') as f:\n    while True:\n        f.write(b'x' * (1 << 20))\n"
    verdict, elapsed = _score(verifier, source, ASSERT_GOLD)
    _assert_wrong_in_time(verdict, elapsed)


def test_many_small_files_are_harmless(verifier):
    source = GOOD_F + "for i in range(20000):\n    open('/tmp/f%d' % i, 'w').close()\n"
    assert verifier.score(source, ASSERT_GOLD).kind is VerdictKind.CORRECT


# --- writes and deletes outside the scratch space -------------------------------------------------------------------

def test_writes_and_deletes_outside_reach_nothing_on_the_host(tmp_path):
    # Its own verifier with a longer per-test limit: walking and failing to delete all of /usr takes seconds on a
    # loaded machine, and a timeout here would hide whether the program got to the end.
    verifier = CodeVerifier(timeout_s=30.0, test_timeout_s=20.0, memory_mb=512, total_memory_mb=1024,
                            max_output_bytes=1 << 16, max_processes=MAX_PROCESSES, tmpfs_mb=TMPFS_MB)
    canary = tmp_path / "canary.txt"
    canary.write_text("original")
    os.chmod(tmp_path, 0o777)
    os.chmod(canary, 0o666)  # even a world-writable file must be out of reach
    before = canary.stat()
    tag = secrets.token_hex(6)
    targets = [str(canary), str(tmp_path / f"new_{tag}"), str(REPO / f"pwned_{tag}"), f"/etc/pwned_{tag}",
               f"/root/pwned_{tag}", f"/usr/pwned_{tag}", f"/tmp/pwned_{tag}"]
    source = GOOD_F + textwrap.dedent(f"""\
        import os, shutil
        for path in {targets!r}:
            for attempt in (lambda: open(path, 'w').write('pwned'), lambda: os.remove(path),
                            lambda: os.chmod(path, 0o777), lambda: os.rename(path, path + '.moved'),
                            lambda: os.makedirs(os.path.dirname(path), exist_ok=True)):
                try:
                    attempt()
                except OSError:
                    pass
        for path in ('/usr/bin/python3', '/etc/ld.so.cache', '/opt/judge/rlpipe/verify/code.py',
                     '/opt/prog/main.py'):
            try:
                os.remove(path)
            except OSError:
                pass
            try:
                open(path, 'a').write('pwned')
            except OSError:
                pass
        shutil.rmtree('/usr', ignore_errors=True)
        """)
    verdict = verifier.score(source, ASSERT_GOLD)
    assert verdict.kind is VerdictKind.CORRECT, verdict  # it ran to the end; only its own tmpfs changed
    after = canary.stat()
    assert canary.read_text() == "original"
    assert (after.st_mtime_ns, after.st_mode, after.st_ino) == (before.st_mtime_ns, before.st_mode, before.st_ino)
    for path in targets[1:]:
        assert not os.path.exists(path), path  # (a path we may not look into, like /root for a normal user, is
        # reported absent; the program ran as that same user, so it could not have written there either)
    assert Path("/usr/bin/python3").exists()
    assert verifier.score(GOOD_F, ASSERT_GOLD).kind is VerdictKind.CORRECT  # the harness copy is intact


def test_host_paths_are_not_even_visible(verifier, tmp_path):
    secret_dir = tmp_path / "visible"
    secret_dir.mkdir()
    _probe(verifier, f"""\
        for path in ({str(secret_dir)!r}, {str(REPO)!r}, '/root', '/home', '/etc/passwd', '/var', '/sys'):
            if os.path.exists(path):
                raise SystemExit('ESCAPED ' + path)
        raise FileNotFoundError('none visible')
        """)


# --- secrets: environment and files ---------------------------------------------------------------------------------

@pytest.fixture
def planted_secret(tmp_path, monkeypatch):
    """A secret in the verifier's environment and in files (a temp dir, and /root when we are root)."""
    value = f"SECRET-{secrets.token_hex(16)}"
    monkeypatch.setenv("RLPIPE_TEST_SECRET", value)
    paths = [tmp_path / "secret.txt"]
    if os.geteuid() == 0 and Path("/root").is_dir():
        paths.append(Path(f"/root/rlpipe_secret_{secrets.token_hex(4)}"))
    for p in paths:
        p.write_text(value)
        os.chmod(p, 0o644)
    os.chmod(tmp_path, 0o755)
    yield value, paths
    for p in paths[1:]:
        p.unlink(missing_ok=True)


def test_environment_and_secret_files_are_unreadable(verifier, planted_secret):
    value, paths = planted_secret
    source = textwrap.dedent(f"""\
        import os, glob
        found = [os.environ.get('RLPIPE_TEST_SECRET', '')]
        for path in {[str(p) for p in paths]!r} + glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline'):
            try:
                found.append(open(path, errors='replace').read())
            except OSError:
                pass
        hits = [t for t in found if 'SECRET-' in t]
        print(hits[0][hits[0].index('SECRET-'):][:39] if hits else 'BLOCKED nothing found ' + repr(dict(os.environ)))
        """)
    verdict = verifier.score(source, {"stdin": [""], "expected_stdout": [value]})
    assert verdict.kind is VerdictKind.WRONG, verdict
    assert verdict.details["got"].startswith("BLOCKED")
    assert value not in repr(verdict.details)
    env = verdict.details["got"]
    assert "RLPIPE_TEST_SECRET" not in env and "HOME': '/work'" in env  # a cleared environment


# --- network --------------------------------------------------------------------------------------------------------

def test_no_connection_reaches_host_listeners(verifier, tmp_path):
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    unix_path = str(tmp_path / "listener.sock")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(unix_path)
    os.chmod(tmp_path, 0o777)
    os.chmod(unix_path, 0o777)
    unix.listen(8)
    abstract_name = f"\0rlpipe-test-{secrets.token_hex(6)}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(abstract_name)
    abstract.listen(8)
    try:
        tcp_port, udp_port = tcp.getsockname()[1], udp.getsockname()[1]
        body = f"""\
            import socket
            blocked = []
            for family, kind, address in [
                    (socket.AF_INET, socket.SOCK_STREAM, ('127.0.0.1', {tcp_port})),
                    (socket.AF_INET, socket.SOCK_STREAM, ('10.0.2.2', 80)),
                    (socket.AF_INET, socket.SOCK_STREAM, ('1.1.1.1', 53)),
                    (socket.AF_INET6, socket.SOCK_STREAM, ('::1', {tcp_port})),
                    (socket.AF_UNIX, socket.SOCK_STREAM, {unix_path!r}),
                    (socket.AF_UNIX, socket.SOCK_STREAM, {abstract_name!r})]:
                s = socket.socket(family, kind)
                s.settimeout(1)
                try:
                    s.connect(address)
                    s.sendall(b'PWNED')
                    raise SystemExit('ESCAPED connect ' + repr(address))
                except OSError as e:
                    blocked.append(e.errno)
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for _ in range(20):
                try:
                    u.sendto(b'PWNED', ('127.0.0.1', {udp_port}))
                except OSError:
                    pass
            raise ConnectionError(f'all connections refused: {{blocked}}')
            """
        _probe(verifier, body)
        for listener in (tcp, unix, abstract):
            listener.setblocking(False)
            with pytest.raises(BlockingIOError):
                listener.accept()
        udp.setblocking(False)
        with pytest.raises(BlockingIOError):
            udp.recvfrom(100)
    finally:
        for s in (tcp, udp, unix, abstract):
            s.close()


def test_only_loopback_exists_inside(verifier):
    _probe(verifier, """\
        import socket
        names = [name for _, name in socket.if_nameindex()]
        if names != ['lo']:
            raise SystemExit('ESCAPED interfaces ' + repr(names))
        raise OSError('only ' + repr(names))
        """)


# --- other processes: signals, ptrace, namespaces, mounts -----------------------------------------------------------

def test_signals_cannot_reach_host_processes(verifier):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        source = GOOD_F + textwrap.dedent(f"""\
            import os, signal
            for pid in ({sleeper.pid}, {os.getpid()}, {os.getppid()}, os.getppid(), 1, -1):
                for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM):
                    try:
                        os.kill(pid, sig)
                    except OSError:
                        pass
            """)
        verdict = verifier.score(source, ASSERT_GOLD)
        # Host pids do not exist in the sandbox, and the judge is the sandbox's init: the kernel drops the
        # program's SIGKILL/SIGSTOP to it (kill(-1) spares init). So the judge survives and scores the program.
        assert verdict.kind is VerdictKind.CORRECT, verdict
        time.sleep(0.2)
        assert sleeper.poll() is None  # still alive
        with open(f"/proc/{sleeper.pid}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] in "SR"  # and not stopped
    finally:
        sleeper.kill()
        sleeper.wait()


def test_judge_survives_every_signal(verifier):
    """The judge is the sandbox's init: signals from inside that it has no handler for are dropped by the kernel."""
    source = GOOD_F + textwrap.dedent("""\
        import os, signal
        for sig in range(1, 32):
            os.kill(1, sig)
        try:
            os.kill(-1, signal.SIGKILL)  # everyone but the caller and init: nobody (ESRCH)
        except ProcessLookupError:
            pass
        """)
    verdict = verifier.score(source, ASSERT_GOLD)
    assert verdict.kind is VerdictKind.CORRECT, verdict


def test_host_pids_are_invisible(verifier):
    _probe(verifier, f"""\
        pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
        if {os.getpid()} in pids or max(pids) > 100:
            raise SystemExit('ESCAPED ' + repr(pids))
        raise ProcessLookupError('only ' + repr(pids))
        """)


@pytest.mark.parametrize("attack", [
    # ptrace of the judge (the program's parent in a stdin task) and of the sandbox's pid 1
    "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nfor pid in (os.getppid(), 1):\n"
    "    if libc.ptrace(16, pid, 0, 0) == 0:\n        raise SystemExit('ESCAPED ptrace')\n"
    "raise PermissionError(ctypes.get_errno(), 'ptrace refused')",
    # the judge's memory and file descriptors through /proc
    "for path in ('/proc/%d/mem' % os.getppid(), '/proc/%d/environ' % os.getppid()):\n"
    "    try:\n        open(path, 'rb').read(1)\n        raise SystemExit('ESCAPED ' + path)\n"
    "    except OSError:\n        pass\nos.listdir('/proc/%d/fd' % os.getppid())",
    "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.mount(b'none', b'/work', b'tmpfs', 0, None) == 0:\n    raise SystemExit('ESCAPED mount')\n"
    "if libc.mount(b'none', b'/usr', None, 32 | 4096, None) == 0:\n    raise SystemExit('ESCAPED remount')\n"
    "raise PermissionError(ctypes.get_errno(), 'mount refused')",
    "os.unshare(os.CLONE_NEWUSER)",
    "os.unshare(os.CLONE_NEWNS)",
    "os.chroot('/tmp')",
    "os.setuid(0)",
    "open('/proc/sysrq-trigger', 'w').write('b')",
    "open('/proc/sys/kernel/hostname', 'w').write('pwned')",
    "open('/dev/mem', 'rb')",
    "open('/dev/kmsg', 'rb')",
    "import socket\nsocket.socket(socket.AF_PACKET, socket.SOCK_RAW)",
    "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nif libc.syscall(298, None, 0, -1, -1, 0) >= 0:\n"
    "    raise SystemExit('ESCAPED perf')\nraise PermissionError(ctypes.get_errno(), 'perf_event_open refused')",
    "import subprocess\nsubprocess.run(['mount', '-t', 'tmpfs', 'none', '/usr'], check=True, capture_output=True)",
], ids=["ptrace", "proc-mem", "mount", "unshare-user", "unshare-mount", "chroot", "setuid", "sysrq", "sysctl",
        "dev-mem", "dev-kmsg", "raw-socket", "perf", "mount-cmd"])
def test_privileged_operations_are_refused(verifier, attack):
    _probe(verifier, attack)


# --- reward hacks ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("source", [
    "import sys\nsys.exit(0)\n",
    "import os\nos._exit(0)\n",
    "def f(x):\n    import os\n    os._exit(0)\n",
    "def f(x):\n    raise SystemExit(0)\n",
    "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",  # kill the judge (ignored: it is init)
    "import os, signal\nos.kill(-1, signal.SIGKILL)\nos.kill(1, signal.SIGSTOP)\n",
], ids=["sys-exit", "os-exit", "os-exit-in-call", "systemexit-in-call", "kill-judge", "kill-init"])
def test_exiting_early_is_wrong(verifier, source):
    verdict, elapsed = _score(verifier, source, ASSERT_GOLD)
    _assert_wrong_in_time(verdict, elapsed)
    assert elapsed < 3


def test_exit_zero_without_output_is_wrong(verifier):
    verdict = verifier.score("import sys\nsys.exit(0)", {"stdin": ["1"], "expected_stdout": ["2"]})
    assert verdict.kind is VerdictKind.WRONG


@pytest.mark.parametrize("source", [
    "class Any:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
    "def f(x):\n    return Any()\n",
    "class S(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
    "def f(x):\n    return S(0)\n",
    "class L(list):\n    def __eq__(self, other):\n        return True\n    def __ne__(self, other):\n"
    "        return False\ndef f(x):\n    return L()\n",
    "import unittest.mock\ndef f(x):\n    return unittest.mock.ANY\n",
    # the builtins of the program's own process mean nothing to the judge
    "import builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {})\ndef f(x):\n    return 0\n",
    # shadow the builtin the test wraps the expected value with
    "def set(*a):\n    return 1\ndef sorted(*a, **k):\n    return 1\ndef f(x):\n    return [x]\n",
], ids=["eq-always-true", "int-subclass-eq", "list-subclass-eq", "mock-any", "patch-builtins", "shadow-builtins"])
def test_equality_hacks_are_wrong(verifier, source):
    gold = {"tests": ["assert f(2) == 4", "assert set(f(5)) == set([10, 11])", "assert sorted(f(1)) == [3, 2]"]}
    verdict = verifier.score(source, gold)
    assert verdict.kind is VerdictKind.WRONG, verdict


def test_equality_hack_in_humaneval_check(verifier):
    source = "class Any:\n    def __eq__(self, other):\n        return True\n    __ne__ = lambda s, o: False\n" \
             "    __hash__ = object.__hash__\ndef f(x):\n    return Any()\n"
    gold = {"test": "def check(candidate):\n    assert candidate(2) == 4\n    assert not (candidate(2) != 4)\n",
            "entry_point": "f"}
    assert verifier.score(source, gold).kind is VerdictKind.WRONG


FAKE_LINES = [
    "PASSED", "All tests passed", "OK", '{"tests": [{"name": "test_0", "ok": true}, {"name": "test_1", "ok": true}]}',
    "@@rlpipe:started:" + "0" * 64 + ":e30=",
    "@@rlpipe:record:" + "a" * 64 + ":eyJ0ZXN0cyI6IFt7Im5hbWUiOiAidGVzdF8wIiwgIm9rIjogdHJ1ZX0sIHsibmFtZSI6ICJ0ZXN0"
    "XzEiLCAib2siOiB0cnVlfV19",  # base64 of a passing record, with a guessed MAC
]


@pytest.mark.parametrize("then", ["", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"],
                         ids=["then-fail", "then-kill-judge"])
def test_printed_fake_results_are_wrong(verifier, then):
    source = "import os, sys\nlines = " + repr(FAKE_LINES) + "\n" + textwrap.dedent("""\
        text = ''.join('\\n' + l + '\\n' for l in lines)
        print(text)
        print(text, file=sys.stderr)
        for target in ('/proc/1/fd/1', '/proc/1/fd/2'):
            try:  # the report pipe itself (reachable when the verifier is not root)
                fd = os.open(target, os.O_WRONLY)
                os.write(fd, text.encode())
            except OSError:
                pass
        def f(x):
            return -1
        """) + then
    verdict, elapsed = _score(verifier, source, ASSERT_GOLD)
    _assert_wrong_in_time(verdict, elapsed)


def test_printed_fake_results_in_a_stdin_task(verifier):
    source = "print(" + repr("\n".join(FAKE_LINES)) + ")\n"
    verdict = verifier.score(source, {"stdin": ["1"], "expected_stdout": ["2"]})
    assert verdict.kind is VerdictKind.WRONG


# --- reading the tests ----------------------------------------------------------------------------------------------

SEEK_EXPECTED = textwrap.dedent("""\
    import gc, glob, os, re, sys

    def _search():
        texts = []
        frame = sys._getframe()
        while frame is not None:
            texts += [repr(frame.f_locals), repr(frame.f_globals.keys()), repr(frame.f_code.co_consts)]
            frame = frame.f_back
        texts += [o for o in gc.get_objects() if isinstance(o, str)]
        texts += [repr(o) for o in gc.get_objects() if isinstance(o, (dict, tuple, list))][:20000]
        for path in glob.glob('/proc/*/cmdline') + glob.glob('/proc/*/environ') + ['/proc/1/fd/0', '/proc/1/fd/3']:
            try:
                texts.append(open(path, 'rb').read(1 << 20).decode('latin-1'))
            except OSError:
                pass
        for root in ('/opt', '/work', '/tmp', '/dev/shm'):
            for dirpath, _, files in os.walk(root):
                for name in files:
                    try:
                        texts.append(open(os.path.join(dirpath, name), 'rb').read().decode('latin-1'))
                    except OSError:
                        pass
        pattern = re.compile('EXPECTED' + '-[0-9a-f]{32}')  # does not match this source itself
        for text in texts:
            found = pattern.search(text)
            if found:
                return found.group(0)
        return 'BLOCKED nothing found'
    """)


def test_assert_tests_cannot_be_read(verifier):
    expected = f"EXPECTED-{secrets.token_hex(16)}"
    source = SEEK_EXPECTED + "def f(x):\n    return _search()\n"
    assert verifier.score(source, {"tests": [f"assert f(1) == {expected!r}"]}).kind is VerdictKind.WRONG
    gold = {"test": f"def check(candidate):\n    assert candidate(1) == {expected!r}\n", "entry_point": "f"}
    assert verifier.score(source, gold).kind is VerdictKind.WRONG
    gold["prompt"] = f"X = {expected!r}\ndef f(x):\n    '''doc'''\n"  # trusted helpers stay with the judge too
    assert verifier.score(source, gold).kind is VerdictKind.WRONG


def test_expected_stdout_cannot_be_read(verifier):
    expected = f"EXPECTED-{secrets.token_hex(16)}"
    verdict = verifier.score(SEEK_EXPECTED + "print(_search())\n", {"stdin": ["x"], "expected_stdout": [expected]})
    assert verdict.kind is VerdictKind.WRONG
    assert verdict.details["got"].startswith("BLOCKED")


def test_program_sees_only_call_arguments(verifier):
    """What reaches the program: the arguments of its calls, never the other side of the comparison."""
    source = "seen = []\ndef f(x):\n    seen.append(x)\n    return seen\n"
    gold = {"tests": ["assert f(1) == [1]", "assert f(2) == [1, 2]"]}
    assert verifier.score(source, gold).kind is VerdictKind.CORRECT


# --- sources: huge, binary, undecodable, pathological ---------------------------------------------------------------

def test_huge_source_is_wrong_without_running(verifier):
    source = GOOD_F + "x = 1\n" * 900_000  # ~5.4 MB
    verdict, elapsed = _score(verifier, source, ASSERT_GOLD)
    assert verdict.kind is VerdictKind.WRONG and elapsed < 2 and "too long" in verdict.details["reason"]
    big_fence = f"```python\n{GOOD_F}{'#' * 5_000_000}\n```"
    assert verifier.score(big_fence, ASSERT_GOLD).kind is VerdictKind.WRONG


@pytest.mark.parametrize("completion,kind", [
    (b"\xff\xfe\x00garbage\x80", VerdictKind.PARSE_FAIL),  # bytes that are not UTF-8
    ("def f(x):\n    return 2 * x\n\x00", VerdictKind.PARSE_FAIL),  # NUL byte, no fence
    ("```python\ndef f(x):\n    return 2 * x  # \udcff\n```", VerdictKind.WRONG),  # lone surrogate in the code
    ("```python\ndef f(x):\n    return 2 * x\n\x00\n```", VerdictKind.WRONG),
    ("```python\n" + "(" * 5000 + "1" + ")" * 5000 + "\n```", VerdictKind.WRONG),
    ("```python\nx = " + "-" * 1_000_000 + "1\n```", VerdictKind.WRONG),
    ("```python\ndef f(x) return\n```", VerdictKind.WRONG),  # a syntax error in a fenced block
    ("I would write a function that doubles x.", VerdictKind.PARSE_FAIL),
    ("", VerdictKind.WRONG),  # empty text parses as an (empty) program: it defines no f
], ids=["not-utf8", "nul", "surrogate", "nul-fenced", "nested-parens", "unary-chain", "syntax-error", "prose",
        "empty"])
def test_undecodable_and_pathological_sources(verifier, completion, kind):
    verdict, elapsed = _score(verifier, completion, ASSERT_GOLD)
    assert verdict.kind is kind, verdict
    assert elapsed < 5


@pytest.mark.parametrize("gold", [{}, {"answer": "4"}, {"tests": []}, {"stdin": ["1"], "expected_stdout": []},
                                  {"test": "def check(candidate): pass"}])
def test_gold_without_tests_is_refused(verifier, gold):
    with pytest.raises(ValueError):
        verifier.score(GOOD_F, gold)


def test_temp_dirs_are_removed():
    before = set(Path(tempfile.gettempdir()).glob("rlpipe-code-*"))
    v = CodeVerifier(timeout_s=TIMEOUT_S, test_timeout_s=TEST_TIMEOUT_S)
    assert v.score(GOOD_F, ASSERT_GOLD).kind is VerdictKind.CORRECT
    assert v.score("while True: pass", ASSERT_GOLD).kind is VerdictKind.WRONG
    assert set(Path(tempfile.gettempdir()).glob("rlpipe-code-*")) <= before
    harness = v._harness_path
    del v
    assert harness is not None and not Path(harness).exists()
