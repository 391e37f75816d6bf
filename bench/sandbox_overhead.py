"""What the code sandbox costs: per-execution overhead of a trivial program, and executions per second.

    .venv/bin/python bench/sandbox_overhead.py [--reps 60] [--workers 1,2,4] [--seconds 8]

Rows, each a trivial program (``/usr/bin/python3 -I -c pass``) unless it says otherwise:
  bare subprocess       subprocess.run of the program, no isolation;
  sandbox               rlpipe.verify.sandbox.run_sandboxed (bwrap, prlimit, seccomp, parent watchdog);
  verifier, asserts     CodeVerifier.score of a one-function program against one assert (judge + program processes);
  verifier, stdin       CodeVerifier.score of a one-line stdin/stdout program against one input.
Then executions per second of the sandbox and of the verifier with N concurrent callers (threads, each blocking on
its own sandbox, as in a pool of verifier actors). Times are wall-clock medians and 90th percentiles.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlpipe.verify.code import CodeVerifier  # noqa: E402
from rlpipe.verify.sandbox import SandboxLimits, run_sandboxed  # noqa: E402

TRIVIAL = ["/usr/bin/python3", "-I", "-c", "pass"]
ASSERT_TASK = ("def f(x):\n    return 2 * x\n", {"tests": ["assert f(2) == 4"]})
STDIN_TASK = ("print(2 * int(input()))", {"stdin": ["2\n"], "expected_stdout": ["4\n"]})


def _times_ms(fn, reps: int) -> list[float]:
    fn()  # warm-up (page cache, the verifier's compiled harness)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10)[-1]


def _throughput(fn, workers: int, seconds: float) -> float:
    done, stop = [0] * workers, time.monotonic() + seconds

    def loop(i: int) -> None:
        while time.monotonic() < stop:
            fn()
            done[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=60)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()

    limits = SandboxLimits(wall_s=10)
    verifier = CodeVerifier()

    def bare():
        subprocess.run(TRIVIAL, check=True)

    def sandbox():
        r = run_sandboxed(TRIVIAL, limits=limits)
        assert r.exit_code == 0, r

    def verify_asserts():
        assert verifier.score(*ASSERT_TASK).kind.value == "correct"

    def verify_stdin():
        assert verifier.score(*STDIN_TASK).kind.value == "correct"

    rows = [("bare subprocess", bare), ("sandbox", sandbox), ("verifier, asserts", verify_asserts),
            ("verifier, stdin", verify_stdin)]
    print(f"{os.cpu_count()} CPUs, uid {os.geteuid()}, load average {os.getloadavg()[0]:.2f} at start")
    print(f"{'per execution':<20} {'median ms':>10} {'p90 ms':>8}")
    medians = {}
    for name, fn in rows:
        ms = _times_ms(fn, args.reps)
        medians[name] = statistics.median(ms)
        print(f"{name:<20} {medians[name]:>10.1f} {_p90(ms):>8.1f}", flush=True)
    print(f"sandbox overhead over bare: {medians['sandbox'] - medians['bare subprocess']:.1f} ms (median)")
    print(f"\n{'executions/s':<20} " + " ".join(f"{'N=' + w:>8}" for w in args.workers.split(",")))
    for name, fn in (("bare subprocess", bare), ("sandbox", sandbox), ("verifier, asserts", verify_asserts)):
        rates = [_throughput(fn, int(w), args.seconds) for w in args.workers.split(",")]
        print(f"{name:<20} " + " ".join(f"{r:>8.1f}" for r in rates), flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
