"""Run one untrusted program in a bubblewrap sandbox, with hard limits enforced from outside it.

What the sandbox is (docs/sandbox.md gives the threat list and how each threat is met):

- ``bwrap`` with every namespace unshared (user, pid, net, ipc, uts, cgroup, mount): no network at all, no view of
  host processes, no further user namespaces (``--disable-userns``), all capabilities dropped, a fresh session,
  a cleared environment (only PATH, HOME=/work, LANG), ``--die-with-parent``.
- The file system is a read-only ``/usr`` (and the ``/lib``, ``/lib64``, ``/bin`` links or directories),
  ``/etc/ld.so.cache``, the caller's read-only binds (the program and its harness), fresh ``/proc`` and ``/dev``,
  and three writable size-capped tmpfs: ``/work`` (the working directory, HOME), ``/tmp`` and ``/dev/shm``. The
  root and ``/dev`` themselves are remounted read-only. Nothing the program writes reaches the host's disk, and what
  it writes is bounded by ``tmpfs_mb`` per mount.
- Run as root, bwrap itself is started as an unprivileged uid (``run_as_uid``, default 65534), so the sandbox's
  processes are never host root, and RLIMIT_NPROC (which root ignores) applies.
- rlimits are set by ``prlimit`` *inside* the sandbox, after bwrap created its user namespace: the kernel then
  counts processes per (user namespace, uid), so ``max_processes`` bounds this sandbox alone; set on bwrap itself
  it would count every process of the uid on the host, and back-to-back sandboxes would starve each other.
- From outside, the parent enforces a wall-clock deadline, a cap on stdout and stderr (read at most N bytes, then
  kill) and a cap on the resident memory of all the sandbox's processes together (RLIMIT_AS bounds one process,
  not a fork storm of them). Killing means SIGKILL to the sandbox's pid-1 and to bwrap's process group; with a
  pid namespace the kernel then kills every process inside, double-forked daemons included. ``run_sandboxed``
  returns only after the sandbox's pid-1 is gone.

This module only runs a command; it knows nothing about tests. ``rlpipe.verify.code`` builds the harness.
"""

from __future__ import annotations

import errno
import os
import re
import select
import selectors
import shutil
import signal
import struct
import subprocess
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

BWRAP_MIN_VERSION = (0, 8, 0)  # --disable-userns and --size (bounded tmpfs) first appear in 0.8.0
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
_PAGE = os.sysconf("SC_PAGE_SIZE")
_POLL_S = 0.02  # how often the parent checks memory and the deadline while the program is silent


# Syscalls refused with EPERM by a seccomp filter, on top of the namespaces and the dropped capabilities (most need
# a capability anyway): debugging other processes, kernel-extension and namespace plumbing, and the interfaces
# behind many kernel exploits (io_uring, bpf, userfaultfd, perf, keyrings). Python programs use none of them.
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kexec_load", "kexec_file_load", "bpf",
    "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key", "mount", "umount2", "pivot_root",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr", "swapon", "swapoff",
    "init_module", "finit_module", "delete_module", "acct", "reboot", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "open_by_handle_at", "name_to_handle_at", "unshare", "setns", "personality",
    "lookup_dcookie", "quotactl", "quotactl_fd", "syslog", "vhangup",
)
_X86_64 = dict(ptrace=101, syslog=103, personality=135, vhangup=153, pivot_root=155, acct=163, mount=165,
               umount2=166, swapon=167, swapoff=168, reboot=169, init_module=175, delete_module=176, quotactl=179,
               lookup_dcookie=212, kexec_load=246, add_key=248, request_key=249, keyctl=250, unshare=272,
               perf_event_open=298, name_to_handle_at=303, open_by_handle_at=304, setns=308,
               process_vm_readv=310, process_vm_writev=311, finit_module=313, kexec_file_load=320, bpf=321,
               userfaultfd=323)
_AARCH64 = dict(lookup_dcookie=18, umount2=39, mount=40, pivot_root=41, vhangup=58, quotactl=60, acct=89,
                personality=92, unshare=97, kexec_load=104, init_module=105, delete_module=106, syslog=116,
                ptrace=117, reboot=142, add_key=217, request_key=218, keyctl=219, swapon=224, swapoff=225,
                perf_event_open=241, name_to_handle_at=264, open_by_handle_at=265, setns=268,
                process_vm_readv=270, process_vm_writev=271, finit_module=273, userfaultfd=282, bpf=280,
                kexec_file_load=294)
_COMMON = dict(io_uring_setup=425, io_uring_enter=426, io_uring_register=427, open_tree=428, move_mount=429,
               fsopen=430, fsconfig=431, fsmount=432, fspick=433, pidfd_getfd=438, mount_setattr=442,
               quotactl_fd=443)  # numbered alike on every architecture since 5.1
SECCOMP_ARCHES = {"x86_64": (0xC000003E, {**_X86_64, **_COMMON}), "aarch64": (0xC00000B7, {**_AARCH64, **_COMMON})}


class SandboxUnavailable(RuntimeError):
    """bwrap is missing, too old, or cannot create its namespaces here: nothing may run (fail closed)."""


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: float = 10.0  # wall-clock deadline of the whole sandbox, enforced by the parent
    cpu_s: int = 10  # RLIMIT_CPU, per process (does not bound sleeping code: wall_s does)
    memory_mb: int = 1024  # RLIMIT_AS, per process (virtual memory)
    total_memory_mb: int = 2048  # resident memory of all the sandbox's processes together (parent watchdog)
    max_processes: int = 32  # RLIMIT_NPROC in the sandbox's own user namespace: processes + threads, pid-1 too
    max_file_mb: int = 16  # RLIMIT_FSIZE: largest file the program may write
    max_open_files: int = 256  # RLIMIT_NOFILE
    tmpfs_mb: int = 64  # size of each writable tmpfs (/work and /tmp)
    max_stdout_bytes: int = 4 << 20  # read at most this much of stdout, then kill
    max_stderr_bytes: int = 1 << 20  # and of stderr


@dataclass
class SandboxResult:
    exit_code: Optional[int]  # bwrap's exit status (the command's, or 1 when bwrap itself failed); None if killed
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    output_overflow: bool = False
    memory_exceeded: bool = False
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    child_pid: Optional[int] = None  # host pid of the sandbox's pid-1 (None if the sandbox never started)
    notes: list[str] = field(default_factory=list)

    @property
    def killed(self) -> bool:
        return self.timed_out or self.output_overflow or self.memory_exceeded


_BWRAP_CHECKED: dict[str, str] = {}


def find_bwrap(path: Optional[str] = None) -> str:
    """The bwrap executable, checked to be at least :data:`BWRAP_MIN_VERSION`; raises SandboxUnavailable."""
    exe = path or shutil.which("bwrap")
    if not exe or not os.access(exe, os.X_OK):
        raise SandboxUnavailable("bubblewrap (bwrap) not found: install it (Debian/Ubuntu: apt-get install "
                                 "bubblewrap); model-generated code is never run without the sandbox")
    if exe in _BWRAP_CHECKED:
        return _BWRAP_CHECKED[exe]
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise SandboxUnavailable(f"cannot run {exe} --version: {e}") from None
    found = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    if not found or tuple(int(x) for x in found.groups()) < BWRAP_MIN_VERSION:
        need = ".".join(map(str, BWRAP_MIN_VERSION))
        raise SandboxUnavailable(f"{exe} reports {out.strip()!r}; bubblewrap >= {need} is needed "
                                 "(--disable-userns and size-capped tmpfs)")
    _BWRAP_CHECKED[exe] = exe
    return exe


def default_run_as(run_as_uid: Optional[int]) -> Optional[tuple[int, int]]:
    """(uid, gid) to start bwrap as: ``run_as_uid`` when we are root, None (ourselves) otherwise."""
    if os.geteuid() != 0:
        return None
    if run_as_uid is None or run_as_uid == 0:
        raise SandboxUnavailable("running as root, the sandbox needs an unprivileged run_as_uid (e.g. 65534): "
                                 "root ignores RLIMIT_NPROC, so a fork storm would be unbounded")
    return run_as_uid, run_as_uid


def seccomp_filter(machine: Optional[str] = None) -> bytes:
    """A classic-BPF seccomp program (the format bwrap's ``--seccomp FD`` reads): EPERM for
    :data:`DENIED_SYSCALLS`, allow the rest; any other architecture (e.g. 32-bit calls) is killed."""
    machine = machine or os.uname().machine
    if machine not in SECCOMP_ARCHES:
        raise SandboxUnavailable(f"no seccomp syscall table for {machine}; pass seccomp=False to run without it")
    arch, table = SECCOMP_ARCHES[machine]
    numbers = sorted(table[name] for name in DENIED_SYSCALLS if name in table)
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    allow, deny, kill = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x80000000
    program = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, kill), (ld, 0, 0, 0)]  # arch check, then A = nr
    if machine == "x86_64":
        program.append((jge, len(numbers) + 1, 0, 0x40000000))  # the x32 ABI's numbers: deny
    for i, nr in enumerate(numbers):
        program.append((jeq, len(numbers) - i, 0, nr))  # jump over the remaining tests and "allow" to "deny"
    program += [(ret, 0, 0, allow), (ret, 0, 0, deny)]
    return b"".join(struct.pack("=HBBI", *ins) for ins in program)


def bwrap_argv(bwrap: str, command: Sequence[str], limits: SandboxLimits,
               ro_binds: Sequence[tuple[str, str]] = (), info_fd: Optional[int] = None,
               seccomp_fd: Optional[int] = None, as_pid_1: bool = False) -> list[str]:
    """The full command line: bwrap's options, then ``prlimit`` inside the sandbox, then ``command``."""
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", "--clearenv", "--setenv", "PATH", SANDBOX_PATH, "--setenv", "HOME", "/work",
            "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--setenv", "OPENBLAS_NUM_THREADS", "1", "--setenv", "OMP_NUM_THREADS", "1",
            "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/lib", "/lib64", "/sbin"):  # merged-/usr systems have links here, older ones directories
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    # The dynamic loader's cache is all python3 wants from /etc; nothing else of the host's /etc is visible.
    size = str(limits.tmpfs_mb << 20)
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
             "--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm",
             "--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", "/work"]
    for src, dest in ro_binds:
        argv += ["--ro-bind", src, dest]
    # bwrap's root and /dev are tmpfs without a size limit: once every mount point exists, make them read-only,
    # so the only writable places are the three size-capped tmpfs above.
    argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/work"]
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    if as_pid_1:
        argv += ["--as-pid-1"]
    argv += ["--", "/usr/bin/prlimit", f"--cpu={limits.cpu_s}", f"--as={limits.memory_mb << 20}",
             f"--fsize={limits.max_file_mb << 20}", f"--nofile={limits.max_open_files}",
             f"--nproc={limits.max_processes}", "--core=0", "--"]
    return argv + list(command)


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (via /proc/<pid>/task/<tid>/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue  # exited meanwhile
    return found


def _rss_bytes(pids: Sequence[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            continue
    return total


def _start_time(pid: int) -> Optional[str]:
    """The start time of a live process ``pid`` (to tell it from a later reuse of the pid); None once it is
    gone or a zombie. A pid-namespace init turns zombie only after every process of its namespace has exited."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # fields after the command name, from field 3 on
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]  # field 22: start time


def _parse_child_pid(info: bytes) -> Optional[int]:
    found = re.search(rb'"child-pid"\s*:\s*(\d+)', info)
    return int(found.group(1)) if found else None


def run_sandboxed(command: Sequence[str], *, stdin: bytes = b"", limits: SandboxLimits = SandboxLimits(),
                  ro_binds: Sequence[tuple[str, str]] = (), run_as_uid: Optional[int] = 65534,
                  bwrap: Optional[str] = None, seccomp: bool = True, as_pid_1: bool = False) -> SandboxResult:
    """Run ``command`` inside a fresh sandbox, feeding it ``stdin``; always returns with the sandbox gone.

    Args:
        command: argv inside the sandbox (e.g. ``["/usr/bin/python3", "-I", "/opt/prog/main.py"]``).
        stdin: bytes written to the program's stdin, which is then closed.
        limits: deadline, rlimits and output/memory caps.
        ro_binds: (host path, sandbox path) pairs mounted read-only, e.g. the program's directory.
        run_as_uid: the unprivileged uid bwrap runs as when the caller is root (ignored otherwise).
        bwrap: path of the bwrap executable (default: found on PATH).
        seccomp: refuse :data:`DENIED_SYSCALLS` (x86_64 and aarch64; elsewhere SandboxUnavailable).
        as_pid_1: ``command`` is the sandbox's pid 1 instead of bwrap's reaper. Then nothing else in the sandbox
            holds its pipes, and other processes of the sandbox cannot signal it (the kernel drops signals sent to
            a namespace's init that it has no handler for); it must reap orphans itself.

    Raises:
        SandboxUnavailable: bwrap is missing or too old, or we are root without an unprivileged uid to drop to.
        OSError: the host could not start the process (e.g. out of pids or file descriptors).
    """
    exe = find_bwrap(bwrap)
    user = default_run_as(run_as_uid)
    rules = seccomp_filter() if seccomp else None
    info_r, info_w = os.pipe()
    seccomp_fd = None
    try:
        if rules is not None:
            seccomp_fd = os.memfd_create("rlpipe-seccomp")  # close-on-exec: only bwrap gets it (pass_fds)
            os.write(seccomp_fd, rules)
            os.lseek(seccomp_fd, 0, os.SEEK_SET)
        argv = bwrap_argv(exe, command, limits, ro_binds, info_fd=info_w, seccomp_fd=seccomp_fd,
                          as_pid_1=as_pid_1)
        start = time.monotonic()
        # bwrap's own environment stays visible to the sandbox in /proc/1/environ (its pid-1 is bwrap, and the
        # same uid as the program): give it nothing of ours, API keys and tokens included.
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={"PATH": SANDBOX_PATH, "LANG": "C.UTF-8"}, cwd="/",
                                pass_fds=(info_w,) if seccomp_fd is None else (info_w, seccomp_fd),
                                start_new_session=True, close_fds=True,
                                **({"user": user[0], "group": user[1], "extra_groups": []} if user else {}))
    finally:
        os.close(info_w)
        if seccomp_fd is not None:
            os.close(seccomp_fd)
    try:
        return _supervise(proc, info_r, stdin, limits, start)
    finally:
        os.close(info_r)


def _supervise(proc: subprocess.Popen, info_r: int, stdin: bytes, limits: SandboxLimits,
               start: float) -> SandboxResult:
    deadline = start + limits.wall_s
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    caps = {out_fd: limits.max_stdout_bytes, err_fd: limits.max_stderr_bytes}
    chunks: dict[int, list[bytes]] = {fd: [] for fd in caps}
    sizes = dict.fromkeys(caps, 0)
    info = b""
    result = SandboxResult(exit_code=None, stdout=b"", stderr=b"")
    child_pid, child_start = None, None
    pending = memoryview(stdin)
    sel = selectors.DefaultSelector()
    for fd in caps:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    sel.register(info_r, selectors.EVENT_READ)
    stdin_fd = proc.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    if pending:
        sel.register(stdin_fd, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    open_fds = set(caps) | {info_r}
    reason = None
    next_mem_check = 0.0
    try:
        while open_fds - {info_r} or proc.poll() is None:
            now = time.monotonic()
            if now >= deadline:
                reason = "timed_out"
                break
            events = sel.select(timeout=min(_POLL_S, deadline - now))
            for key, _ in events:
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        n = os.write(fd, pending[:65536])
                        pending = pending[n:]
                    except BlockingIOError:
                        continue
                    except OSError:  # the sandbox closed its stdin (exited, or never read it)
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(fd)
                        proc.stdin.close()
                    continue
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not data:
                    sel.unregister(fd)
                    open_fds.discard(fd)
                    continue
                if fd == info_r:
                    info += data
                    if child_pid is None:
                        child_pid = _parse_child_pid(info)
                        child_start = _start_time(child_pid) if child_pid else None
                    continue
                room = caps[fd] - sizes[fd]
                chunks[fd].append(data[:room])
                sizes[fd] += min(len(data), room)
                if len(data) > room:
                    reason = "output_overflow"
            if reason:
                break
            if child_pid is not None and time.monotonic() >= next_mem_check:
                next_mem_check = time.monotonic() + _POLL_S
                rss = _rss_bytes(_descendants(child_pid))
                result.peak_rss_mb = max(result.peak_rss_mb, rss / (1 << 20))
                if rss > limits.total_memory_mb << 20:
                    reason = "memory_exceeded"
                    break
    finally:
        sel.close()
        if reason or proc.poll() is None:
            _kill(proc, child_pid)
        proc.wait()
        if child_pid is None:
            try:  # bwrap may have written the info just before dying
                child_pid = _parse_child_pid(info + os.read(info_r, 65536)) if _readable(info_r) else None
                child_start = _start_time(child_pid) if child_pid else None
            except OSError:
                pass
        if child_pid is not None:
            result.notes += _await_gone(child_pid, child_start)
        for fd in caps:  # bytes already in the pipes (all writers are dead now: this cannot block)
            try:
                while sizes[fd] < caps[fd]:
                    data = os.read(fd, 65536)
                    if not data:
                        break
                    data = data[:caps[fd] - sizes[fd]]
                    chunks[fd].append(data)
                    sizes[fd] += len(data)
            except OSError:
                pass
        for f in (proc.stdin, proc.stdout, proc.stderr):
            try:
                f.close()
            except OSError:
                pass
    if reason:
        setattr(result, reason, True)
    result.exit_code = None if reason else proc.returncode
    result.stdout = b"".join(chunks[out_fd])
    result.stderr = b"".join(chunks[err_fd])
    result.wall_s = time.monotonic() - start
    result.child_pid = child_pid
    return result


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _kill(proc: subprocess.Popen, child_pid: Optional[int]) -> None:
    """SIGKILL the sandbox's pid-1 (the kernel then kills its whole pid namespace) and bwrap's process group."""
    if child_pid is not None:
        try:
            os.kill(child_pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError as e:
        if e.errno != errno.ESRCH:
            raise


def _await_gone(pid: int, start_time: Optional[str], limit_s: float = 5.0) -> list[str]:
    """Wait until the sandbox's pid-1 has left the process table (its namespace is then empty)."""
    until = time.monotonic() + limit_s
    while time.monotonic() < until:
        now = _start_time(pid)
        if now is None or now != start_time:
            return []
        try:
            os.kill(pid, signal.SIGKILL)  # it may have outlived bwrap only for an instant; make sure
        except OSError:
            pass
        time.sleep(0.005)
    return [f"sandbox pid-1 {pid} still present {limit_s:g} s after the kill"]
