"""Where an rlpipe run's start-up goes: the wall time until the roles are ready and until the first step starts, and
the CPU seconds each process spent until then (the driver, Ray's own processes, each role). On a machine with few
cores the start-up is bound by the sum of that CPU work, not by any one process: the figure "CPU floor" is that sum
divided by the cores, the shortest start-up any ordering of the same work could reach.

    .venv/bin/python bench/startup.py [--runs 2] [--cores 2] [-- extra overrides ...]

Start-up is measured as bench/peers/compare.py does: from the driver process's start to the start of step 1, minus
the step-0 evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
RAY_DAEMONS = ("gcs_server", "raylet", "dashboard", "agent", "monitor", "log_monitor", "plasma", "runtime_env")
ROLE_LINE = re.compile(r"worker pids: (learner ranks|rollout engines|verifiers) \[([\d, ]+)\]")


class ProcessSampler(threading.Thread):
    """Every process of a tree, sampled every ``interval`` s: (time, cumulative CPU seconds) per process."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.root, self.interval = psutil.Process(pid), interval
        self.series: dict[tuple[int, float], list[tuple[float, float]]] = defaultdict(list)
        self.cmdline: dict[tuple[int, float], str] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.Error:
                procs = []
            now = time.time()
            for p in procs:
                try:
                    with p.oneshot():
                        key = (p.pid, p.create_time())
                        t = p.cpu_times()
                        self.series[key].append((now, t.user + t.system))
                        if key not in self.cmdline:
                            self.cmdline[key] = " ".join(p.cmdline())
                except psutil.Error:
                    continue
            self.halt.wait(self.interval)

    def cpu_until(self, key, t: float) -> float:
        """CPU seconds the process had used at unix time t (its last sample before t)."""
        before = [c for s, c in self.series[key] if s <= t]
        return before[-1] if before else 0.0


def classify(key, cmdline: str, root_pid: int, roles: dict[int, str]) -> str:
    pid = key[0]
    if pid == root_pid:
        return "driver"
    if pid in roles:
        return roles[pid]
    if "default_worker" in cmdline:
        return "Ray idle workers (pre-started, unused)"
    if any(name in cmdline for name in RAY_DAEMONS):
        return "Ray's own processes"
    return "other"


def one_run(overrides: list[str], out_dir: Path) -> dict:
    cmd = [sys.executable, "-m", "rlpipe.train", "trainer.total_steps=2", "trainer.eval_every_steps=100",
           f"trainer.output_dir={out_dir}", "trainer.resume=never", "logger.progress_bar=false", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    log_path = out_dir.with_suffix(".log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        sampler = ProcessSampler(proc.pid)
        sampler.start()
        rc = proc.wait(timeout=1200)
        sampler.halt.set()
        sampler.join(timeout=5)
    if rc != 0:
        sys.exit(f"the run failed (exit {rc}); its log: {log_path}")
    started = sampler.root.create_time()
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    eval0_s = rows[0]["timing/eval"]
    ready_at = started + rows[0]["time/elapsed_s"] - eval0_s  # the step-0 evaluation starts: engines and verifiers up
    step1_at = started + rows[1]["time/elapsed_s"] - rows[1]["timing/step"]
    roles = {}
    for name, pids in ROLE_LINE.findall(log_path.read_text()):
        for pid in pids.split(","):
            roles[int(pid)] = name
    cpu_ready, cpu_step1 = defaultdict(float), defaultdict(float)
    for key, cmdline in sampler.cmdline.items():
        group = classify(key, cmdline, proc.pid, roles)
        cpu_ready[group] += sampler.cpu_until(key, ready_at)
        cpu_step1[group] += sampler.cpu_until(key, step1_at)
    return {"ready_s": ready_at - started, "startup_s": step1_at - started - eval0_s, "eval0_s": eval0_s,
            "cpu_until_ready": dict(cpu_ready), "cpu_until_step1": dict(cpu_step1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--cores", type=int, default=psutil.cpu_count())
    ap.add_argument("overrides", nargs="*", help="rlpipe train overrides (after --)")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="rlpipe-startup-") as tmp:
        for i in range(args.runs):
            results.append(one_run(args.overrides, Path(tmp) / f"run{i}"))
            r = results[-1]
            print(f"run {i + 1}: roles ready {r['ready_s']:.1f} s, start-up {r['startup_s']:.1f} s "
                  f"(step-0 evaluation {r['eval0_s']:.1f} s excluded)", flush=True)
    groups = sorted({g for r in results for g in r["cpu_until_step1"]},
                    key=lambda g: -results[0]["cpu_until_step1"].get(g, 0.0))
    print(f"\nCPU seconds until the first step starts (the step-0 evaluation included), {args.cores} cores; "
          f"overrides: {' '.join(args.overrides) or '(none)'}\n")
    print("| process | " + " | ".join(f"run {i + 1}" for i in range(len(results))) + " |")
    print("|---|" + "---|" * len(results))
    for g in groups:
        print(f"| {g} | " + " | ".join(f"{r['cpu_until_step1'].get(g, 0.0):.1f}" for r in results) + " |")
    print("| **all** | " + " | ".join(f"**{sum(r['cpu_until_step1'].values()):.1f}**" for r in results) + " |")
    print("| CPU floor: all ÷ cores, minus the evaluation's wall time | " + " | ".join(
        f"{sum(r['cpu_until_step1'].values()) / args.cores - r['eval0_s']:.1f} s" for r in results) + " |")
    print("| start-up measured | " + " | ".join(f"{r['startup_s']:.1f} s" for r in results) + " |")


if __name__ == "__main__":
    main()
