"""The half of the code verifier that runs *inside* the sandbox, under the system ``/usr/bin/python3`` with only the
standard library: the judge (pid 1 of the sandbox: trusted code only, holds the tests and the run's key) and the
program's process it forks (runs the untrusted code), and the wire format between them. The host half, which builds
the task and reads the judge's authenticated report, is ``rlpipe.verify.code``; the argument for why a program
cannot forge a verdict is in its docstring and in docs/sandbox.md.

Why one file over 500 lines: it stands alone. It is copied into the sandbox by itself and run by the system python
with no rlpipe installed there, so it cannot import helpers from the rest of the package; splitting it would mean
copying several files in and reasoning about all of them as trusted code inside the sandbox.
"""

from __future__ import annotations

import ast
import base64
import builtins
import collections
import hashlib
import hmac
import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
from typing import Any, Optional

# Every sample's sandbox imports this file: standard library only, nothing the judge does not use.
JUDGE_DIR = "/opt/judge"  # the harness (this package's files), mounted read-only inside the sandbox
PROGRAM_DIR = "/opt/prog"  # the program, mounted read-only
PROGRAM = f"{PROGRAM_DIR}/main.py"
SANDBOX_PYTHON = "/usr/bin/python3"


# ---------------------------------------------------------------------------------------------------------------
# Wire format between the judge and the program (both inside the sandbox)
# ---------------------------------------------------------------------------------------------------------------

MAX_DEPTH = 100  # nesting of one encoded value


class WireError(Exception):
    """A value that cannot cross the pipe (or a malformed message)."""


class ChannelBroken(BaseException):
    """The program died, overran its deadline or broke the protocol. A BaseException so that a test's own
    ``except Exception`` cannot swallow it (the judge also checks the channel after every test)."""


def _plain_base(v: Any) -> Optional[type]:
    """For a subclass of a plain type that keeps its equality (a namedtuple, an IntEnum): that plain type."""
    for base in (int, float, complex, str, bytes, tuple, list, dict, set, frozenset):
        if isinstance(v, base):
            cls = type(v)
            return base if cls.__eq__ is base.__eq__ and cls.__ne__ is base.__ne__ else None
    return None


def encode(v: Any, refs: Optional[dict] = None, depth: int = 0) -> Any:
    """``v`` as JSON-able tagged data. Objects that are not plain data become handles (``refs`` given: the program
    side keeps them) or raise WireError (the judge side)."""
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    t, d = type(v), depth + 1
    if v is None:
        return ["N"]
    if t is bool:
        return ["b", v]
    if t is int:
        return ["i", format(v, "x")]
    if t is float:
        return ["f", v.hex()]
    if t is complex:
        return ["c", v.real.hex(), v.imag.hex()]
    if t is str:
        return ["s", v]
    if t in (bytes, bytearray):
        return ["y" if t is bytes else "Y", base64.b64encode(v).decode()]
    if t in (list, tuple, set, frozenset, collections.deque):
        tag = {list: "l", tuple: "t", set: "S", frozenset: "F", collections.deque: "Q"}[t]
        return [tag, [encode(x, refs, d) for x in v]]
    if t in (dict, collections.OrderedDict, collections.Counter, collections.defaultdict):
        tag = {dict: "d", collections.OrderedDict: "O", collections.Counter: "C", collections.defaultdict: "D"}[t]
        return [tag, [[encode(k, refs, d), encode(x, refs, d)] for k, x in v.items()]]
    if t is range:
        return ["R", encode(v.start), encode(v.stop), encode(v.step)]
    if t is type(Ellipsis):
        return ["E"]
    if isinstance(v, RemoteRef):
        return ["r", object.__getattribute__(v, "_id"), ""]
    base = _plain_base(v)
    if base is not None:
        return encode(base(v), refs, depth)
    if refs is None:
        raise WireError(f"cannot send a {t.__name__} to the program")
    refs[id(v)] = v
    return ["r", id(v), str(getattr(t, "__name__", "?"))[:100]]


def decode(w: Any, make_ref, depth: int = 0) -> Any:
    """The value ``encode`` produced; handles become ``make_ref(id, type name)``. Raises WireError."""
    if depth > MAX_DEPTH + 1:
        raise WireError("value nested too deeply")
    try:
        tag, d = w[0], depth + 1
        if tag == "N":
            return None
        if tag == "b":
            if type(w[1]) is not bool:
                raise WireError("bad bool")
            return w[1]
        if tag == "i":
            return int(w[1], 16)
        if tag == "f":
            return float.fromhex(w[1])
        if tag == "c":
            return complex(float.fromhex(w[1]), float.fromhex(w[2]))
        if tag == "s":
            if type(w[1]) is not str:
                raise WireError("bad str")
            return w[1]
        if tag in ("y", "Y"):
            raw = base64.b64decode(w[1], validate=True)
            return raw if tag == "y" else bytearray(raw)
        if tag in ("l", "t", "S", "F", "Q"):
            items = [decode(x, make_ref, d) for x in w[1]]
            return {"l": list, "t": tuple, "S": set, "F": frozenset, "Q": collections.deque}[tag](items)
        if tag in ("d", "O", "C", "D"):
            pairs = [(decode(k, make_ref, d), decode(x, make_ref, d)) for k, x in w[1]]
            if tag == "D":
                return collections.defaultdict(None, pairs)
            return {"d": dict, "O": collections.OrderedDict, "C": collections.Counter}[tag](dict(pairs))
        if tag == "R":
            return range(decode(w[1], make_ref, d), decode(w[2], make_ref, d), decode(w[3], make_ref, d))
        if tag == "E":
            return Ellipsis
        if tag == "r":
            return make_ref(int(w[1]), str(w[2])[:100])
    except WireError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, OverflowError, RecursionError, MemoryError) as e:
        raise WireError(f"malformed value ({type(e).__name__})") from None
    raise WireError("unknown value tag")


def send_msg(fd: int, obj: Any) -> None:
    data = json.dumps(obj, separators=(",", ":")).encode()
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    parts, left = [], n
    while left:
        wait = None if deadline == float("inf") else deadline - time.monotonic()
        if wait is not None and (wait <= 0 or not select.select([fd], [], [], wait)[0]):
            raise ChannelBroken("timeout")
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise ChannelBroken("the program exited")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def recv_msg(fd: int, deadline: float = float("inf"), limit: int = 1 << 30) -> Any:
    (n,) = struct.unpack(">I", _read_exact(fd, 4, deadline))
    if n > limit:
        raise ChannelBroken(f"message of {n} bytes exceeds the limit of {limit}")
    try:
        return json.loads(_read_exact(fd, n, deadline))
    except (ValueError, RecursionError, MemoryError):
        raise ChannelBroken("malformed message") from None


# ---------------------------------------------------------------------------------------------------------------
# The program's side (runs the untrusted code; trusts nothing it receives beyond the message format)
# ---------------------------------------------------------------------------------------------------------------

def candidate_main(req_fd: int, resp_fd: int) -> None:
    """Serve the judge's requests: load the program, look names up, call functions, convert handles."""
    sys.path[:] = [p for p in sys.path if p != JUDGE_DIR]
    import site  # the judge runs without site (-S); the program gets the usual system site-packages

    site.main()
    refs: dict[int, Any] = {}
    ns: dict[str, Any] = {"__name__": "__solution__", "__builtins__": builtins}
    unary = {"list": list, "len": len, "bool": bool, "str": str, "repr": repr, "float": float, "int": int}

    def value(v):
        return ["M", v.__name__] if type(v) is type(sys) else encode(v, refs)

    while True:
        try:
            msg = recv_msg(req_fd)
        except ChannelBroken:
            os._exit(0)
        try:
            op = msg["op"]
            if op == "load":
                with open(PROGRAM, encoding="utf-8") as f:
                    source = f.read()
                exec(compile(source, "main.py", "exec", dont_inherit=True), ns)
                if msg.get("setup"):
                    exec(compile(msg["setup"], "setup.py", "exec", dont_inherit=True), ns)
                reply = ["N"]
            elif op == "lookup":  # module-level bindings only: builtins are the judge's own
                reply = {n: value(ns[n]) for n in msg["names"] if n in ns and not n.startswith("__")}
            elif op == "call":
                args = [decode(a, lambda i, _: refs[i]) for a in msg["args"]]
                kwargs = {k: decode(a, lambda i, _: refs[i]) for k, a in msg["kwargs"]}
                reply = value(refs[msg["ref"]](*args, **kwargs))
            elif op == "getattr":
                reply = value(getattr(refs[msg["ref"]], msg["name"]))
            else:
                reply = value(unary[op](refs[msg["ref"]]))
            out = {"ok": reply}
        except BaseException as e:  # the program's exception (SystemExit included) goes back to the test
            try:
                out = {"raise": [type(e).__name__[:100], str(e)[:500]]}
            except BaseException:
                out = {"raise": ["Exception", "unprintable exception"]}
        try:
            send_msg(resp_fd, out)
        except (OSError, TypeError, ValueError, RecursionError):
            send_msg(resp_fd, {"raise": ["WireError", "reply could not be encoded"]})


# ---------------------------------------------------------------------------------------------------------------
# The judge's side (trusted code only; holds the tests and the key; never runs the program's code)
# ---------------------------------------------------------------------------------------------------------------

class ProgramError(Exception):
    """An exception raised in the program whose type is not a builtin exception."""


class JudgeTimeout(BaseException):
    pass


class RemoteRef:
    """A handle on an object that stayed in the program. Equal only to itself; calling it, reading an attribute or
    converting it (iter, len, bool, str, float, int) asks the program, which sees only the call's arguments."""

    __slots__ = ("_ch", "_id", "_type")

    def __init__(self, ch: "_Channel", ref_id: int, type_name: str):
        object.__setattr__(self, "_ch", ch)
        object.__setattr__(self, "_id", ref_id)
        object.__setattr__(self, "_type", type_name)

    def _ask(self, op: str, **extra):
        return object.__getattribute__(self, "_ch").ask(op, ref=object.__getattribute__(self, "_id"), **extra)

    def __call__(self, *args, **kwargs):
        return self._ask("call", args=[encode(a) for a in args], kwargs=[[k, encode(a)] for k, a in kwargs.items()])

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._ask("getattr", name=name)

    def __iter__(self):
        return iter(self._ask("list"))

    def __len__(self):
        return self._ask("len")

    def __bool__(self):
        return self._ask("bool") is True

    def __str__(self):
        return str(self._ask("str"))

    def __float__(self):
        return float(self._ask("float"))

    def __int__(self):
        return int(self._ask("int"))

    def __index__(self):
        return int(self._ask("int"))

    def __repr__(self):
        return f"<program object of type {object.__getattribute__(self, '_type')}>"

    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__


class _Channel:
    """The judge's end of the pipes to the program process."""

    def __init__(self, pid: int, req_w: int, resp_r: int, limit: int):
        self.pid, self.req_w, self.resp_r, self.limit = pid, req_w, resp_r, limit
        self.deadline = float("inf")
        self.broken: Optional[str] = None

    def ask(self, op: str, **msg) -> Any:
        """Send one request; the program's return value, or its exception raised here."""
        reply = self._exchange(dict(msg, op=op))
        if "raise" in reply:
            raise _program_exception(reply["raise"])
        return self._protect(self.value, reply["ok"])

    def lookup(self, names: list[str]) -> dict[str, Any]:
        """The program's module-level bindings of ``names`` (absent: not defined); modules as ``_Module``."""
        reply = self._exchange({"op": "lookup", "names": names})
        if "raise" in reply:
            raise _program_exception(reply["raise"])

        def convert(found):
            out = {}
            for name in names:
                if name in found:
                    w = found[name]
                    out[name] = _Module(str(w[1])) if w[0] == "M" else self.value(w)
            return out

        return self._protect(convert, reply["ok"])

    def _exchange(self, msg: dict) -> dict:
        if self.broken:
            raise ChannelBroken(self.broken)
        try:
            send_msg(self.req_w, msg)
            reply = recv_msg(self.resp_r, self.deadline, self.limit)
        except OSError as e:
            self.fail(f"the program closed its pipe ({e.strerror})")
        except ChannelBroken as e:
            self.fail(str(e))
        if not isinstance(reply, dict) or not ("ok" in reply or (
                "raise" in reply and isinstance(reply["raise"], list) and len(reply["raise"]) == 2)):
            self.fail("malformed reply")
        return reply

    def _protect(self, convert, w: Any) -> Any:
        try:
            return convert(w)
        except (WireError, KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
            self.fail(f"malformed reply ({type(e).__name__})")

    def value(self, w: Any) -> Any:
        return decode(w, lambda i, t: RemoteRef(self, i, t))

    def fail(self, why: str):
        self.broken = why
        kill_others()
        raise ChannelBroken(why)


class _Module:
    def __init__(self, name: str):
        self.name = name


def _program_exception(raised: list) -> Exception:
    """The judge-side twin of the program's exception: the builtin class of that name, else ProgramError."""
    name, text = str(raised[0])[:100], str(raised[1])[:500]
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(text)
        except Exception:
            pass
    return ProgramError(f"{name}: {text}")


def kill_others() -> None:
    """SIGKILL every other process of the sandbox (kill(-1) spares only the caller, the namespace's init), then reap
    them all: as init the judge inherits every orphan, and unreaped zombies would count against max_processes."""
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _names(tree: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def _stdlib_module(name: str) -> bool:
    skip = {"this", "antigravity", "idlelib", "tkinter", "turtle", "turtledemo", "webbrowser", "pydoc", "test"}
    names = getattr(sys, "stdlib_module_names", ())
    return name in names and name not in skip and not name.startswith("_")


def _trusted(name: str, ns: dict) -> bool:
    return name in ns or hasattr(builtins, name) or _stdlib_module(name)


def _bind(ns: dict, names: set[str], ch: _Channel) -> None:
    """Bind every name the tests use: trusted first (the tests' own definitions, builtins, standard modules), then
    the program's module-level bindings. A name nobody defines stays unbound (NameError in that test)."""
    wanted = sorted(n for n in names if n not in ns and not hasattr(builtins, n))
    program = ch.lookup(wanted) if wanted else {}
    for name in wanted:
        if _stdlib_module(name):
            ns[name] = __import__(name)
        elif isinstance(program.get(name), _Module):  # a module the program imported (as another name)
            module = program[name].name
            if _stdlib_module(module.split(".")[0]):
                __import__(module)
                ns[name] = sys.modules[module]
        elif name in program:
            ns[name] = program[name]


class _SubjectCalls(ast.NodeTransformer):
    """``assert f(...) == x`` where the program defines ``f`` but ``f`` is also a builtin or standard module name
    (MBPP 126 defines ``sum``): only that call site is bound to the program's ``f``; every other use of the name in
    the test keeps the trusted meaning, so a program cannot hijack ``set``/``sorted`` on the expected side."""

    def __init__(self, ns: dict, defined: set[str]):
        self.ns, self.defined, self.renamed = ns, defined, {}

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        test = node.test
        if isinstance(test, ast.Compare) and isinstance(test.left, ast.Call) and \
                isinstance(test.left.func, ast.Name):
            name = test.left.func.id
            if name in self.defined and _trusted(name, self.ns):
                alias = f"__program_{name}"
                test.left.func = ast.copy_location(ast.Name(id=alias, ctx=ast.Load()), test.left.func)
                self.renamed[alias] = name
        return node


class Judge:
    """Runs the tests with the program in a separate process; produces the record sent to the host."""

    def __init__(self, task: dict, started: float):
        self.task = task
        self.test_timeout_s = float(task["test_timeout_s"])
        self.deadline = started + float(task["timeout_s"])
        self.limit = int(task["max_output_bytes"])
        self.message_limit = int(task["max_message_bytes"])

    # -- function tests (asserts, check(candidate)) --

    def prepare(self) -> tuple[dict, list]:
        """Trusted set-up from the gold fields alone: (namespace, assert trees; for HumanEval a placeholder).
        Exceptions here are the gold's fault (reported as such, never scored)."""
        ns: dict[str, Any] = {"__name__": "__test__", "__builtins__": builtins}
        task = self.task
        if task["mode"] == "humaneval":
            if task.get("prompt"):
                exec(compile(task["prompt"], "prompt.py", "exec", dont_inherit=True), ns)
                ns.pop(task["entry_point"], None)  # the prompt's stub: the program's function replaces it
            exec(compile(task["test"], "test.py", "exec", dont_inherit=True), ns)
            if not callable(ns.get("check")):
                raise ValueError("the test source defines no check(candidate)")
            return ns, [("check", None)]
        trees = [ast.parse(t, f"test_{i}") for i, t in enumerate(task["tests"])]
        return ns, trees

    def run_functions(self, ch: _Channel, ns: dict, tests: list) -> dict:
        ch.deadline = min(time.monotonic() + self.test_timeout_s, self.deadline)
        results: list[dict] = []
        try:
            ch.ask("load", setup=self.task.get("setup", ""))
            if self.task["mode"] == "humaneval":
                entry = self.task["entry_point"]
                _bind(ns, _names(ast.parse(self.task["test"])) - {"candidate", entry}, ch)
                target = ch.lookup([entry]).get(entry)
                if not isinstance(target, RemoteRef):
                    raise NameError(f"the program defines no function {entry!r}")
                ns[entry] = target  # some checks call it by name too (HumanEval/33 compares it with itself)
                jobs = [("check", lambda: ns["check"](target))]
            else:
                names = set().union(*(_names(t) for t in tests))
                program = ch.lookup(sorted(names))
                subjects = _SubjectCalls(ns, set(program))
                trees = [ast.fix_missing_locations(subjects.visit(t)) for t in tests]
                for alias, name in subjects.renamed.items():
                    ns[alias] = program[name]
                _bind(ns, names, ch)
                jobs = [(f"test_{i}", self._exec_job(compile(t, f"test_{i}", "exec", dont_inherit=True), ns))
                        for i, t in enumerate(trees)]
        except BaseException as e:
            return {"tests": [{"name": "load", "ok": False, "why": _why(e, ch)}]}
        for name, job in jobs:
            t0 = time.monotonic()
            ch.deadline = min(t0 + self.test_timeout_s, self.deadline)
            outcome = {"name": name, "ok": False}
            try:
                with _alarm(ch.deadline - t0 + 1.0):
                    job()
                outcome["ok"] = ch.broken is None
                if ch.broken:
                    outcome["why"] = ch.broken
            except BaseException as e:
                outcome["why"] = _why(e, ch)
            outcome["s"] = round(time.monotonic() - t0, 4)
            results.append(outcome)
            if not outcome["ok"]:
                break  # one failure decides the verdict; the program may be in any state now
        return {"tests": results}

    @staticmethod
    def _exec_job(code, ns):
        return lambda: exec(code, ns)

    # -- stdin/stdout tests --

    def run_stdio(self) -> dict:
        runs = []
        for text in self.task["stdin"]:
            t0 = time.monotonic()
            deadline = min(t0 + self.test_timeout_s, self.deadline)
            try:
                run = _run_program([SANDBOX_PYTHON, "-I", "-B", PROGRAM], text.encode(), deadline, self.limit)
            except OSError as e:  # no process of the program is alive to blame (kill_others): the host's trouble
                return {"runs": runs, "infra_error": f"cannot start the program: {e}"}
            run["s"] = round(time.monotonic() - t0, 4)
            runs.append(run)
            kill_others()  # daemons the run left behind must not disturb the next one
            if not run["ok_exit"]:
                break
        return {"runs": runs}


def _why(e: BaseException, ch: Optional[_Channel]) -> str:
    if ch is not None and ch.broken:
        return ch.broken
    if isinstance(e, JudgeTimeout):
        return "timeout"
    try:
        text = str(e)
    except BaseException:
        text = "?"
    return f"{type(e).__name__}: {text}"[:300]


class _alarm:
    """SIGALRM backstop for the judge's own code (a test looping on the program's answers)."""

    def __init__(self, seconds: float):
        self.seconds = max(seconds, 0.01)

    def _expire(self, signum, frame):
        raise JudgeTimeout("timeout")

    def __enter__(self):
        self.previous = signal.signal(signal.SIGALRM, self._expire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)
        return False


def _run_program(argv: list[str], stdin: bytes, deadline: float, limit: int) -> dict:
    """One run of a stdin/stdout program: its output (at most ``limit`` bytes), exit status, timeout."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd="/work", start_new_session=True, close_fds=True)
    out, err, pending = [], [], memoryview(stdin)
    size, overflow, timed_out = 0, False, False
    readers = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    for fd in readers:
        os.set_blocking(fd, False)
    wfd = proc.stdin.fileno()
    os.set_blocking(wfd, False)
    if not pending:
        proc.stdin.close()
        wfd = None
    while readers and not overflow:
        wait = deadline - time.monotonic()
        if wait <= 0:
            timed_out = True
            break
        # Poll for the exit: once the program has exited, what is left in the pipes is collected, but a daemon
        # that inherited them and stays silent must not keep us waiting.
        exited = proc.poll() is not None
        r, w, _ = select.select(list(readers), [wfd] if wfd is not None else [], [], min(wait, 0.02))
        if exited and not r and not w:
            break
        if w:
            try:
                pending = pending[os.write(wfd, pending[:65536]):]
            except BlockingIOError:
                pass
            except OSError:
                pending = pending[:0]
            if not pending:
                proc.stdin.close()
                wfd = None
        for fd in r:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not data:
                del readers[fd]
                continue
            if fd == proc.stdout.fileno():
                out.append(data)
                size += len(data)
                overflow = size > limit
            elif sum(map(len, err)) < 4096:
                err.append(data)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    code = proc.wait()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        try:
            f.close()
        except OSError:
            pass
    stdout = b"".join(out)[:limit]
    return {"out": base64.b64encode(stdout).decode(), "err": b"".join(err)[-2000:].decode("utf-8", "replace"),
            "exit": code, "timeout": timed_out, "overflow": overflow,
            "ok_exit": code == 0 and not timed_out and not overflow}


def judge_main() -> None:
    """Entry point of the judge process: the sandbox's pid 1 (``--as-pid-1``), so that the kernel drops the signals
    the program sends it (SIGKILL and SIGSTOP included), and nothing else in the sandbox holds the report pipe.

    Order matters. (1) Become non-dumpable: a process of the same uid without capabilities can then neither
    ptrace us nor open our /proc/<pid>/{mem,fd,environ}. (2) Fork the program's process *before* reading the task:
    its copy of our memory holds no key and no tests, and it closes stdin and stdout (the task and report pipes)
    before running anything of the program's. (3) Read the task to EOF, so the pipe is empty for anyone who
    reopens it through /proc/1/fd/0. (4) Authenticate every report with the key.
    """
    started = time.monotonic()
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE = 4
        raise SystemExit("judge: prctl(PR_SET_DUMPABLE, 0) failed")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # no handler: the program's SIGINT to its init is dropped
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)  # the task and report pipes are gone before any of the program's code runs
            for fd in map(int, os.listdir("/proc/self/fd")):
                if fd > 2 and fd not in (req_r, resp_w):
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            candidate_main(req_r, resp_w)
        finally:
            os._exit(0)
    os.close(req_r)
    os.close(resp_w)
    raw = sys.stdin.buffer.read()
    task = json.loads(raw)
    key = bytes.fromhex(task.pop("key"))
    report_fd = os.dup(1)
    os.dup2(2, 1)  # anything the judge's imports print goes to stderr, never into the report channel
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)

    def report(kind: str, body: dict) -> None:
        payload = base64.b64encode(json.dumps(body).encode())
        mac = hmac.new(key, kind.encode() + b":" + payload, hashlib.sha256).hexdigest().encode()
        data = memoryview(b"\n@@rlpipe:" + kind.encode() + b":" + mac + b":" + payload + b"\n")
        while data:
            data = data[os.write(report_fd, data):]

    judge = Judge(task, started)
    if task["mode"] == "stdio":
        os.close(req_w)  # the forked process is not needed: it exits when its pipe closes
        os.waitpid(pid, 0)
        report("started", {})
        report("record", judge.run_stdio())
        return
    try:
        ns, tests = judge.prepare()
    except BaseException as e:
        report("record", {"gold_error": _why(e, None)})
        return
    report("started", {})
    ch = _Channel(pid, req_w, resp_r, judge.message_limit)
    record = judge.run_functions(ch, ns, tests)
    kill_others()
    report("record", record)
