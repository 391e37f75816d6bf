"""The half of the ``python`` tool that runs *inside* the sandbox, under the system ``/usr/bin/python3`` with only the
standard library: the harness (the sandbox's pid 1, trusted code only) and the cell process it forks (runs the
model's code). The host half, which builds the task and reads the harness's authenticated report, is
``rlpipe.agents.python_tool``; it copies this file into a read-only directory mounted at :data:`CELL_DIR`.

One sandbox serves one call. The harness:

1. becomes non-dumpable and ignores SIGINT: as the namespace's init, the kernel then drops every signal the program
   sends it, and the program (same uid, no capabilities, ptrace refused by seccomp) cannot open its
   ``/proc/1/{mem,fd,environ}``;
2. forks the cell process *before* reading the task (the cells and the call's random key) from stdin, so that
   process's copy of the harness's memory holds no key; the cell process closes every descriptor but its socket to
   the harness, with stdin, stdout and stderr on /dev/null;
3. reads the task to EOF, reports ``started`` (no program code has run yet: a sandbox that never gets this far is the
   host's failure, not the model's), and sends the earlier cells; the cell process runs them in one namespace with
   their output on /dev/null and answers one message per cell;
4. once every earlier cell is done, hands over the new cell's code and the write end of the output pipe (passed over
   the socket with SCM_RIGHTS), so no replayed cell ever held the descriptor whose bytes become the observation;
5. reads that pipe (at most ``max_output_bytes``), waits for the cell's end under its own deadline, SIGKILLs every
   other process of the sandbox, and reports the ``record`` (status, the new cell's output, its error) to the host,
   HMAC-SHA256-signed with the key. The program's bytes reach the host only inside that signed record, base64
   encoded, so nothing it prints can pass for the harness's framing or a status line.

What the program can do is lie about *itself*: its process holds its end of the socket, so it can send the harness a
fake "cell raised" or "cell done" for its own cells, as it could catch its own exceptions. That changes only its own
observation and which of its cells are kept, never the host's view of a timeout, an output or memory overrun, and
never turns the call into an infrastructure failure (a record after ``started`` is always the program's outcome).

Wire format between the harness and the cell process: 4-byte big-endian length, then UTF-8 JSON.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import hmac
import json
import linecache
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback

CELL_DIR = "/opt/cell"  # where the host mounts (read-only) the directory holding this file
MAX_MESSAGE_BYTES = 1 << 20  # cells are at most max_code_chars long; anything bigger is a broken protocol
MAX_ERROR_CHARS = 4000  # of one formatted traceback: the host shows only its last lines
_POLL_S = 0.02  # how often the harness looks for the cell process's exit while nothing arrives


# ---------------------------------------------------------------------------------------------------------------
# The cell process (runs the model's code; trusts nothing)
# ---------------------------------------------------------------------------------------------------------------

def _send(sock: socket.socket, obj) -> None:
    data = json.dumps(obj, separators=(",", ":")).encode()
    sock.sendall(struct.pack(">I", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes, never more: a descriptor passed after them must stay for ``socket.recv_fds``."""
    parts, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 16))
        if not chunk:
            raise EOFError("the harness closed the socket")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _recv(sock: socket.socket):
    (n,) = struct.unpack(">I", _recv_exact(sock, 4))
    return json.loads(_recv_exact(sock, n))


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # the program may have replaced the stream with anything
            pass


def _describe(exc: BaseException, skip_frame: bool) -> str:
    """The traceback as Python prints it, without the harness's own frame, at most MAX_ERROR_CHARS (its end)."""
    try:
        tb = exc.__traceback__.tb_next if skip_frame and exc.__traceback__ else exc.__traceback__
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except BaseException:  # an exception whose __str__ raises, a patched traceback module...
        text = f"{type(exc).__name__}: <unprintable exception>"
    return text[-MAX_ERROR_CHARS:]


def run_cell(cell: dict, ns: dict, own_pid: int):
    """Compile and run one cell in ``ns``; returns None, or {"kind": "syntax"|"raised", "text": traceback}.

    A process the cell forked that falls off the end of it exits here (flushing its output, as Python does at exit)
    instead of running the harness's protocol as a second copy of the cell process.
    """
    name, source = str(cell["name"]), str(cell["code"])
    # Tracebacks through this cell (now, or from a function it defines, called by a later cell) show its lines.
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    try:
        code = compile(source, name, "exec", dont_inherit=True)  # not this file's `from __future__ import ...`
    except BaseException as e:  # SyntaxError, ValueError (NUL bytes), RecursionError, MemoryError
        return {"kind": "syntax", "text": _describe(e, skip_frame=False)}
    error = None
    try:
        exec(code, ns)
    except BaseException as e:  # SystemExit and KeyboardInterrupt included: the cell did not complete
        error = {"kind": "raised", "text": _describe(e, skip_frame=True)}
    if os.getpid() != own_pid:
        _flush_std()
        os._exit(0)
    return error


def cell_main(sock: socket.socket) -> None:
    """Run the earlier cells silently, then the new one with stdout on the pipe the harness hands over."""
    own_pid = os.getpid()
    sys.path[:] = [p for p in sys.path if p != CELL_DIR]
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the harness ignores SIGINT; the program need not
    try:
        import site  # the harness runs without site (-S); the model's code gets the usual system site-packages

        site.main()
    except Exception:
        pass
    sys.argv = [""]
    ns = {"__name__": "__main__", "__doc__": None, "__builtins__": builtins}
    for i, cell in enumerate(_recv(sock)["cells"]):
        error = run_cell(cell, ns, own_pid)
        _flush_std()  # into /dev/null, before the next cell's output could be anything else
        _send(sock, {"replayed": i, "error": error})
    _send(sock, {"ready": True})
    cell = _recv(sock)
    _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    if not fds:
        raise EOFError("no output descriptor")
    os.dup2(fds[0], 1)
    os.close(fds[0])
    error = run_cell(cell, ns, own_pid)
    _flush_std()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # our write end is closed before "done": all we printed is in the pipe by then
    _send(sock, {"done": True, "error": error})


# ---------------------------------------------------------------------------------------------------------------
# The harness (trusted code only: holds the key; never runs the model's code)
# ---------------------------------------------------------------------------------------------------------------

class _Broken(Exception):
    """The cell process sent something that is not the protocol."""


class _Link:
    """The harness's end of the socket to the cell process, and that process's exit status."""

    def __init__(self, sock: socket.socket, pid: int):
        self.sock, self.pid = sock, pid
        self.fd = sock.fileno()
        self.buf = bytearray()
        self.eof = False
        self.exit_status = None

    def reap(self) -> bool:
        """Reap every exited process (as init we inherit the orphans); True once the cell process is gone."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == self.pid:
                self.exit_status = status
        return self.exit_status is not None

    def receive(self) -> None:
        try:
            data = self.sock.recv(1 << 16)
        except (BlockingIOError, socket.timeout):  # select said readable; a spurious wake-up is not an EOF
            return
        except OSError:
            data = b""
        if not data:
            self.eof = True
        self.buf += data
        if len(self.buf) > MAX_MESSAGE_BYTES + 4:
            raise _Broken("message too long")

    def pop(self):
        if len(self.buf) < 4:
            return None
        (n,) = struct.unpack(">I", self.buf[:4])
        if n > MAX_MESSAGE_BYTES:
            raise _Broken("message too long")
        if len(self.buf) < 4 + n:
            return None
        raw = bytes(self.buf[4:4 + n])
        del self.buf[:4 + n]
        try:
            msg = json.loads(raw)
        except (ValueError, RecursionError):
            raise _Broken("malformed message") from None
        if not isinstance(msg, dict):
            raise _Broken("malformed message")
        return msg

    def send(self, obj, deadline: float, fd=None) -> None:
        """Send ``obj`` (and then ``fd``, alone with one byte) within ``deadline``; raises OSError (socket.timeout
        included) when the cell process does not take it."""
        self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        _send(self.sock, obj)
        if fd is not None:
            socket.send_fds(self.sock, [b"F"], [fd])


class _Output:
    """The read end of the new cell's stdout pipe, read up to ``cap`` bytes."""

    def __init__(self, fd: int, cap: int):
        self.fd, self.cap = fd, cap
        self.chunks, self.size = [], 0
        self.closed = self.overflow = False

    def read(self) -> bool:
        """Read what is there now; False when nothing was (or the pipe is closed, or over the cap)."""
        if self.closed or self.overflow:
            return False
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return False
        if not data:
            self.closed = True
            return False
        self.chunks.append(data[:self.cap + 1 - self.size])
        self.size += len(data)
        self.overflow = self.size > self.cap
        return True

    def data(self) -> bytes:
        return b"".join(self.chunks)[:self.cap]


def _wait(link: _Link, deadline: float, output=None):
    """The next message from the cell process, as (message, None), or (None, why): "timeout", "exited" (it is gone
    and said nothing more), "overflow" (its output went past the cap) or "protocol"."""
    try:
        while True:
            msg = link.pop()
            if msg is not None:
                return msg, None
            if output is not None and output.overflow:
                return None, "overflow"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, "timeout"
            gone = link.reap()  # looked at before select: what it sent before exiting is then already readable
            fds = [] if link.eof else [link.fd]
            if output is not None and not output.closed:
                fds.append(output.fd)
            ready = select.select(fds, [], [], min(remaining, _POLL_S))[0] if fds else []
            if not fds:
                time.sleep(min(remaining, _POLL_S))
            if link.fd in ready:
                link.receive()
            if output is not None and output.fd in ready:
                output.read()
            if gone and link.fd not in ready:
                msg = link.pop()
                return (msg, None) if msg is not None else (None, "exited")
    except _Broken:
        return None, "protocol"


def _kill_others() -> None:  # judge.kill_others' twin: each harness runs alone in its sandbox, importing nothing
    """SIGKILL every other process of the sandbox (kill(-1) spares only the caller, the namespace's init), then reap
    them all, so that the report is written with nothing of the program's left running."""
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _session(link: _Link, task: dict, out_r: int, out_w: int) -> dict:
    """Drive one call: replay the earlier cells, run the new one; returns the record (see the host's reader)."""
    record = {"replayed": [], "status": "ok", "error": None, "exit": None, "at": None, "cell_s": 0.0, "out": ""}
    cells = task["cells"]
    deadline = time.monotonic() + float(task["replay_timeout_s"])
    try:
        link.send({"cells": cells}, deadline)
    except OSError:
        record.update(status="replay_timeout", at=0)
        return record
    while len(record["replayed"]) < len(cells):
        msg, why = _wait(link, deadline)
        i = len(record["replayed"])
        if why is None and msg.get("replayed") != i:
            why = "protocol"
        if why is not None:
            record.update(status=f"replay_{why}", at=i)
            return record
        error = msg.get("error")
        record["replayed"].append(str(error.get("text", ""))[:MAX_ERROR_CHARS] if isinstance(error, dict) else None)
    msg, why = _wait(link, deadline)
    if why is not None or msg.get("ready") is not True:
        record.update(status=f"replay_{why or 'protocol'}", at=len(cells))
        return record
    started = time.monotonic()
    deadline = started + float(task["timeout_s"])
    output = _Output(out_r, int(task["max_output_bytes"]))
    try:
        link.send(task["new"], deadline, fd=out_w)
        why = None
    except OSError:
        why = "timeout" if time.monotonic() >= deadline else "protocol"
    os.close(out_w)
    if why is None:
        msg, why = _wait(link, deadline, output)
        if why is None and msg.get("done") is not True:
            why = "protocol"
    record["cell_s"] = round(time.monotonic() - started, 4)
    _kill_others()  # every writer of the pipe is dead after this: what is left in it is final
    while output.read():
        pass
    if output.overflow:
        why = "overflow"
    if why is None:
        error = msg.get("error")
        if isinstance(error, dict):
            record.update(status="syntax" if error.get("kind") == "syntax" else "error",
                          error=str(error.get("text", ""))[:MAX_ERROR_CHARS])
    else:
        record["status"] = why
        if why == "exited" and link.exit_status is not None:
            record["exit"] = os.waitstatus_to_exitcode(link.exit_status)
    record["out"] = base64.b64encode(output.data()).decode()
    return record


def main() -> None:
    """Entry point of the harness, the sandbox's pid 1 (``--as-pid-1``). Order matters; see the module docstring."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE = 4
        raise SystemExit("harness: prctl(PR_SET_DUMPABLE, 0) failed")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # no handler at all: the program's SIGINT to its init is dropped
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)  # the task and report pipes are gone before any of the program's code runs
            for fd in map(int, os.listdir("/proc/self/fd")):
                if fd > 2 and fd != theirs.fileno():
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            cell_main(theirs)
        finally:
            os._exit(0)
    theirs.close()
    task = json.loads(sys.stdin.buffer.read())
    key = bytes.fromhex(task.pop("key"))
    report_fd = os.dup(1)
    os.dup2(2, 1)  # anything printed by accident goes to stderr, never into the report channel
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    out_r, out_w = os.pipe()  # made before "started": after it, nothing may fail for want of the host's resources
    os.set_blocking(out_r, False)

    def report(kind: str, body: dict) -> None:
        payload = base64.b64encode(json.dumps(body).encode())
        mac = hmac.new(key, kind.encode() + b":" + payload, hashlib.sha256).hexdigest().encode()
        data = memoryview(b"\n@@rlpipe:" + kind.encode() + b":" + mac + b":" + payload + b"\n")
        while data:
            data = data[os.write(report_fd, data):]

    report("started", {})
    record = _session(_Link(ours, pid), task, out_r, out_w)
    _kill_others()
    report("record", record)


if __name__ == "__main__":
    main()
