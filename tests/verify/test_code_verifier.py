"""The code verifier: completion parsing, gold formats, the wire format, and agreement with real data sets
(every HumanEval canonical solution and every MBPP test-split reference solution passes; perturbed ones fail).

The real-data tests run each sample in its own sandbox, many at once (a thread pool over ``score()``, as a pool
of verifier actors would). The hostile programs are in test_sandbox_hostile.py.
"""

from __future__ import annotations

import collections
import gzip
import json
import multiprocessing
import os
import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import DATA, needs_bwrap, needs_data
from rlpipe.verify.code import (CodeVerifier, extract_code, fenced_blocks, normalise_output, read_reports,
                                task_from_gold)
from rlpipe.verify.judge import WireError, decode, encode
from rlpipe.verify.sandbox import (DENIED_SYSCALLS, SECCOMP_ARCHES, SandboxLimits, SandboxUnavailable, bwrap_argv,
                                   seccomp_filter)
from rlpipe.verify.types import VerdictKind

WORKERS = max(2, os.cpu_count() or 2)  # one sandbox per core at a time: more only adds timeout risk

# MBPP test-split reference solutions that cannot pass here, with the reason (docs/sandbox.md). None at present:
# the one that needed care, task 126 (its function is named ``sum``), passes through the subject-call rule.
MBPP_EXPECTED_FAILURES: dict[int, str] = {}


# --- completion parsing ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("completion,code", [
    ("Here:\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1"),
    ("```python\nx = 1\n```\ntext\n```python\nx = 2\n```", "x = 2"),  # the last python block
    ("```py\nx = 1\n```\n```bash\nls\n```", "x = 1"),  # other languages are skipped
    ("```\nx = 3\n```", "x = 3"),  # an untagged block counts
    ("```python\nx = 4\n", "x = 4\n"),  # an unclosed final fence (the completion was cut off) runs to the end
    ("x = 5\nprint(x)\n", "x = 5\nprint(x)\n"),  # no fence: the whole completion, since it parses
])
def test_extract_code(completion, code):
    assert extract_code(completion)[0] == code


@pytest.mark.parametrize("completion", ["The answer is a loop.", "```bash\nls -la\n```", "def f(:\n"])
def test_extract_code_fails_without_python(completion):
    assert extract_code(completion)[0] is None


def test_fenced_block_may_contain_inner_backticks():
    text = '```python\ns = "```"\nt = 1\n```'
    assert fenced_blocks(text) == [("python", 's = "```"\nt = 1')]


# --- gold formats ---------------------------------------------------------------------------------------------------

def test_gold_formats():
    task, expected = task_from_gold({"tests": ["assert f(1) == 2"], "test_setup_code": "import math"})
    assert task == {"mode": "asserts", "tests": ["assert f(1) == 2"], "setup": "import math"} and expected is None
    task, _ = task_from_gold({"test": "def check(candidate): pass", "entry_point": "f", "prompt": "def g(): pass"})
    assert task["mode"] == "humaneval" and task["entry_point"] == "f"
    task, expected = task_from_gold({"stdin": ["1"], "expected_stdout": ["2"]})
    assert task == {"mode": "stdio", "stdin": ["1"]} and expected == ["2"]  # the outputs stay on the host


@pytest.mark.parametrize("gold", [
    {}, {"answer": "3"}, {"tests": []}, {"tests": [""]}, {"tests": "assert f() == 1"}, {"tests": ["assert ("]},
    {"test": "def check(candidate): pass"}, {"stdin": ["1"]}, {"stdin": ["1", "2"], "expected_stdout": ["1"]},
    {"stdin": [], "expected_stdout": []},
])
def test_gold_without_usable_tests_raises(gold):
    with pytest.raises(ValueError):
        task_from_gold(gold)


def test_normalise_output():
    assert normalise_output("1 \n2\t\r\n\n\n") == normalise_output("1\n2") == ["1", "2"]
    assert normalise_output(" 1") != normalise_output("1")  # leading whitespace matters
    assert normalise_output("") == normalise_output("\n\n") == []


# --- the wire format between judge and program ----------------------------------------------------------------------

ROUND_TRIP = [
    None, True, False, 0, -7, 2 ** 200, -(3 ** 300), 0.1, -0.0, float("inf"), 1e-310, complex(1, -2), "",
    "héllo \udcff", b"\x00\xff", bytearray(b"ab"), [1, [2, (3,)]], (1, "a", None), {1: "a", (2, 3): [4]},
    {1, 2}, frozenset({"x"}), collections.Counter("abca"), collections.OrderedDict([(2, 1), (1, 2)]),
    collections.deque([1, 2]), range(1, 10, 3), Ellipsis, [],
]


@pytest.mark.parametrize("value", ROUND_TRIP, ids=[repr(v)[:30] for v in ROUND_TRIP])
def test_wire_round_trip_keeps_value_and_type(value):
    back = decode(json.loads(json.dumps(encode(value))), make_ref=None)
    assert back == value and type(back) is type(value)


def test_wire_round_trip_of_nan_and_defaultdict():
    assert decode(encode(float("nan")), None) != decode(encode(float("nan")), None)  # nan stays nan
    d = collections.defaultdict(list, {1: [2]})
    back = decode(encode(d), None)
    assert type(back) is collections.defaultdict and back == d


def test_wire_tuple_is_not_list():
    assert decode(encode((1, 2)), None) != [1, 2]


def test_objects_with_their_own_equality_never_cross_as_values():
    class Any:
        def __eq__(self, other):
            return True

    class Int(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    Point = collections.namedtuple("Point", "x y")
    refs = {}
    assert encode(Any(), refs)[0] == "r" and encode(Int(3), refs)[0] == "r"  # handles, equal only to themselves
    assert encode(Point(1, 2), refs) == encode((1, 2))  # a subclass that keeps tuple equality is a tuple
    with pytest.raises(WireError):
        encode(Any())  # the judge side never sends objects


@pytest.mark.parametrize("wire", [["q"], ["i", "zz"], ["b", 1], ["S", [["l", []]]], ["d", [[["l", []], ["N"]]]],
                                  ["s", 3], "x", None, ["l", "notalist"]])
def test_malformed_values_raise_wire_error(wire):
    with pytest.raises(WireError):
        decode(wire, make_ref=None)


def test_deep_values_are_refused():
    deep = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(WireError):
        encode(deep)


def test_reports_need_the_key():
    import base64
    import hashlib
    import hmac

    key = secrets.token_bytes(32)
    payload = base64.b64encode(json.dumps({"tests": [{"ok": True}]}).encode())
    good = hmac.new(key, b"record:" + payload, hashlib.sha256).hexdigest().encode()
    forged = hmac.new(b"guess", b"record:" + payload, hashlib.sha256).hexdigest().encode()
    out = b"noise @@rlpipe:record:" + forged + b":" + payload + b"\n"
    assert read_reports(out, key) == {}
    assert read_reports(out + b"@@rlpipe:record:" + good + b":" + payload + b"\n", key) == {
        "record": {"tests": [{"ok": True}]}}


# --- the sandbox's command line and seccomp filter ------------------------------------------------------------------

def test_bwrap_command_line_has_every_isolation_flag():
    argv = bwrap_argv("bwrap", ["python3", "x.py"], SandboxLimits(max_processes=7), [("/h", "/opt/p")], info_fd=5)
    text = " ".join(argv)
    for flag in ("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
                 "--clearenv", "--cap-drop ALL", "--proc /proc", "--dev /dev", "--tmpfs /tmp", "--tmpfs /work",
                 "--ro-bind /usr /usr", "--ro-bind /h /opt/p", "--remount-ro /", "--setenv HOME /work",
                 "/usr/bin/prlimit", "--nproc=7", "--core=0"):
        assert flag in text, flag
    assert "--share-net" not in text and "--bind /" not in text.replace("--ro-bind /", "")
    assert argv[-2:] == ["python3", "x.py"]


@pytest.mark.parametrize("machine", sorted(SECCOMP_ARCHES))
def test_seccomp_filter_shape(machine):
    rules = seccomp_filter(machine)
    table = SECCOMP_ARCHES[machine][1]
    assert set(DENIED_SYSCALLS) == set(table)  # every denied call is numbered on every architecture we support
    assert len(rules) % 8 == 0 and len(rules) // 8 == len(DENIED_SYSCALLS) + 6 + (machine == "x86_64")


def test_seccomp_filter_unknown_architecture():
    with pytest.raises(SandboxUnavailable):
        seccomp_filter("mips")


# --- scoring --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def verifier() -> CodeVerifier:
    return CodeVerifier()


def test_constructible_without_running_anything():
    v = CodeVerifier(timeout_s=5, test_timeout_s=1, memory_mb=256, max_output_bytes=1000, max_processes=8,
                     max_file_mb=1, correct_reward=2.0, wrong_reward=-1.0, parse_fail_reward=-2.0)
    assert v.score("I do not know.", {"tests": ["assert f() == 1"]}).reward == -2.0


@needs_bwrap
def test_rewards_and_verdicts(verifier):
    v = CodeVerifier(correct_reward=2.0, wrong_reward=-1.0, parse_fail_reward=-2.0)
    assert v.score("def f():\n    return 1\n", {"tests": ["assert f() == 1"]}).reward == 2.0
    assert v.score("def f():\n    return 2\n", {"tests": ["assert f() == 1"]}).reward == -1.0
    assert v.score("no code here", {"tests": ["assert f() == 1"]}).reward == -2.0


@needs_bwrap
def test_three_gold_formats(verifier):
    program = "def double(x):\n    return 2 * x\n"
    assert verifier.score(program, {"tests": ["assert double(2) == 4"]}).kind is VerdictKind.CORRECT
    check = "def check(candidate):\n    for i in range(50):\n        assert candidate(i) == 2 * i\n"
    assert verifier.score(program, {"test": check, "entry_point": "double"}).kind is VerdictKind.CORRECT
    io = {"stdin": ["1 2\n", "5 5\n"], "expected_stdout": ["3\n", "10  \n\n"]}
    assert verifier.score("a, b = map(int, input().split())\nprint(a + b)", io).kind is VerdictKind.CORRECT
    assert verifier.score("a, b = map(int, input().split())\nprint(a * b)", io).kind is VerdictKind.WRONG


@needs_bwrap
def test_program_semantics(verifier):
    """Values the tests need cross intact: generators (through list()), classes, exceptions, module names."""
    program = ("import math as m\nclass Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n"
               "def total(pairs):\n    return sum(p.a + p.b for p in pairs)\n"
               "def evens(n):\n    return (i for i in range(n) if i % 2 == 0)\n"
               "def boom(x):\n    raise ValueError('no')\ndef area(r):\n    return m.pi * r * r\n")
    gold = {"tests": ["assert total([Pair(1, 2), Pair(3, 4)]) == 10", "assert list(evens(5)) == [0, 2, 4]",
                      "assert set(evens(3)) == {0, 2}", "assert math.isclose(area(1), 3.14159, rel_tol=1e-3)",
                      "assert evens(3) != [0, 2]"]}
    assert verifier.score(program, gold).kind is VerdictKind.CORRECT
    check = "def check(candidate):\n    try:\n        candidate(1)\n    except ValueError:\n        return\n" \
            "    assert False\n"
    assert verifier.score(program, {"test": check, "entry_point": "boom"}).kind is VerdictKind.CORRECT


@needs_bwrap
def test_programs_and_tests_do_not_inherit_the_judges_future_imports(verifier):
    """The judge has ``from __future__ import annotations``; code it compiles must not: a program (or a test) that
    reads its own annotations sees the classes, not strings, as under a plain ``python``."""
    program = ("def f(x: int) -> int:\n    return x\nANNOTATED = f.__annotations__['x'] is int\n"
               "def annotated():\n    return ANNOTATED\n")
    test = "def h(y: int):\n    pass\nassert annotated() is True and h.__annotations__['y'] is int"
    assert verifier.score(program, {"tests": [test]}).kind is VerdictKind.CORRECT
    check = "def check(candidate):\n    def h(y: int):\n        pass\n    assert h.__annotations__['y'] is int\n" \
            "    assert candidate() is True\n"
    assert verifier.score(program, {"test": check, "entry_point": "annotated"}).kind is VerdictKind.CORRECT


@needs_bwrap
def test_prompt_helpers_are_the_judges_own(verifier):
    """HumanEval/32 checks the answer with ``poly`` from the prompt: given the prompt, the program's own ``poly``
    (which a hacker would make return 0) is not the one the check uses."""
    prompt = "def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\n\n" \
             "def find_zero(xs):\n    '''a zero of poly(xs)'''\n"
    check = "def check(candidate):\n    assert abs(poly([-2, 1], candidate([-2, 1]))) < 1e-6\n"
    hack = "def poly(xs, x):\n    return 0\ndef find_zero(xs):\n    return 123.0\n"
    gold = {"test": check, "entry_point": "find_zero"}
    assert verifier.score(hack, gold).kind is VerdictKind.CORRECT  # without the prompt the hack works (as upstream)
    assert verifier.score(hack, {**gold, "prompt": prompt}).kind is VerdictKind.WRONG
    assert verifier.score(prompt + "    return 2.0\n", {**gold, "prompt": prompt}).kind is VerdictKind.CORRECT


@needs_bwrap
def test_timeout_of_the_program_is_wrong_not_error():
    v = CodeVerifier(timeout_s=5, test_timeout_s=1)
    verdict = v.score("def f():\n    while True: pass\n", {"tests": ["assert f() == 1"]})
    assert verdict.kind is VerdictKind.WRONG and verdict.rewardable and verdict.details["timeout"] is True
    verdict = v.score("import time\ntime.sleep(60)", {"stdin": ["1"], "expected_stdout": ["1"]})
    assert verdict.kind is VerdictKind.WRONG and verdict.details["reason"] == "timeout"


@needs_bwrap
def test_gold_that_fails_on_its_own_is_an_error(verifier):
    verdict = verifier.score("def f(): pass", {"test": "raise RuntimeError('bad gold')\n", "entry_point": "f"})
    assert verdict.kind is VerdictKind.ERROR and "bad gold" in verdict.details["gold_error"]


def _score_in_child(items):
    v = CodeVerifier()
    return [v.score(c, g).kind.value for c, g in items]


@needs_bwrap
def test_concurrent_processes_do_not_collide():
    items = [("def f(x):\n    return x + %d\n" % i, {"tests": ["assert f(1) == %d" % (i + 1)]}) for i in range(4)]
    items += [("def f(x):\n    return x\n", {"tests": ["assert f(1) == 2"]})]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_score_in_child, [items, items])
    assert results == [["correct"] * 4 + ["wrong"]] * 2


# --- real data ------------------------------------------------------------------------------------------------------

def _humaneval():
    with gzip.open(DATA / "humaneval" / "HumanEval.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


def _mbpp_test_split():
    rows = [json.loads(line) for line in (DATA / "mbpp" / "mbpp.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if 11 <= r["task_id"] <= 510]


def _he_gold(row):
    return {"test": row["test"], "entry_point": row["entry_point"], "prompt": row["prompt"]}


def _mbpp_gold(row):
    return {"tests": row["test_list"], "setup": row["test_setup_code"]}


# Some reference programs carry invalid escapes ("\\d"): the host's syntax check warns, harmlessly.
real_data = pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")


def _score_all(verifier, jobs):
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(lambda job: (job[0], verifier.score(job[1], job[2])), jobs))


def _perturbed(code: str, name: str) -> str:
    """The reference with every result of ``name`` changed (ints +1, bools negated, anything else wrapped)."""
    return code + f"\n\n_reference = {name}\n\ndef {name}(*args, **kwargs):\n" \
                  "    r = _reference(*args, **kwargs)\n    if isinstance(r, bool):\n        return not r\n" \
                  "    if isinstance(r, (int, float)):\n        return r + 1\n    return ('perturbed', r)\n"


def _mbpp_name(row) -> str:
    return row["test_list"][0].split("assert", 1)[1].strip().split("(", 1)[0].strip()


@real_data
@needs_data
@needs_bwrap
def test_real_data_sample(verifier):
    """A quick slice of both data sets (the full runs are marked slow)."""
    he, mbpp = _humaneval()[:6], _mbpp_test_split()[:10]
    jobs = [(r["task_id"], r["prompt"] + r["canonical_solution"], _he_gold(r)) for r in he]
    jobs += [(r["task_id"], r["code"], _mbpp_gold(r)) for r in mbpp]
    jobs += [(("broken", r["task_id"]), _perturbed(r["code"], _mbpp_name(r)), _mbpp_gold(r)) for r in mbpp[:4]]
    kinds = {task: v.kind for task, v in _score_all(verifier, jobs)}
    assert all(kind is VerdictKind.CORRECT for task, kind in kinds.items() if not isinstance(task, tuple))
    assert all(kind is VerdictKind.WRONG for task, kind in kinds.items() if isinstance(task, tuple))


@pytest.mark.slow
@real_data
@needs_data
@needs_bwrap
def test_every_humaneval_canonical_solution_passes_and_perturbed_ones_fail(verifier):
    rows = _humaneval()
    jobs = [(r["task_id"], r["prompt"] + r["canonical_solution"], _he_gold(r)) for r in rows]
    jobs += [(("perturbed", r["task_id"]), _perturbed(r["prompt"] + r["canonical_solution"], r["entry_point"]),
              _he_gold(r)) for r in rows[::8]]
    jobs += [(("stub", r["task_id"]), r["prompt"] + "    return None\n", _he_gold(r)) for r in rows[3::8]]
    results = _score_all(verifier, jobs)
    bad = {task: v.details for task, v in results if not isinstance(task, tuple) and v.kind is not VerdictKind.CORRECT}
    assert not bad
    passed_broken = [task for task, v in results if isinstance(task, tuple) and v.kind is not VerdictKind.WRONG]
    assert not passed_broken


@pytest.mark.slow
@real_data
@needs_data
@needs_bwrap
def test_every_mbpp_reference_solution_passes_and_perturbed_ones_fail(verifier):
    rows = _mbpp_test_split()
    assert len(rows) == 500
    jobs = [(r["task_id"], r["code"], _mbpp_gold(r)) for r in rows]
    jobs += [(("perturbed", r["task_id"]), _perturbed(r["code"], _mbpp_name(r)), _mbpp_gold(r)) for r in rows[::10]]
    jobs += [(("renamed", r["task_id"]), r["code"].replace(_mbpp_name(r), _mbpp_name(r) + "_x"), _mbpp_gold(r))
             for r in rows[5::25]]
    results = _score_all(verifier, jobs)
    failed = {task: v.details for task, v in results
              if not isinstance(task, tuple) and v.kind is not VerdictKind.CORRECT}
    assert set(failed) == set(MBPP_EXPECTED_FAILURES), failed
    errors = [task for task, v in results if v.kind is VerdictKind.ERROR]
    assert not errors
    passed_broken = [task for task, v in results if isinstance(task, tuple) and v.kind is not VerdictKind.WRONG]
    assert not passed_broken


@real_data
@needs_data
@needs_bwrap
def test_mbpp_google_research_original_rows(verifier):
    """The three original rows the copy corrected. 596 (``sys.getsizeof`` sizes of one Python build) and 642 (an
    expectation that depends on set order) fail, as in plain CPython. 341 (``tuple(s)`` of a set literal) depends
    on the set's iteration order, which follows its insertion history: plain CPython 3.11 fails it, the sandbox
    passes it, because the judge's set reaches the program rebuilt in iteration order (docs/sandbox.md)."""
    path = DATA / "mbpp" / "mbpp_google_research_2251e8c_original_rows.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    results = dict(_score_all(verifier, [(r["task_id"], r["code"], _mbpp_gold(r)) for r in rows]))
    assert {task: v.kind for task, v in results.items()} == {
        341: VerdictKind.CORRECT, 596: VerdictKind.WRONG, 642: VerdictKind.WRONG}
