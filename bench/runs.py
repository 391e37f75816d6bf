"""Shared by the benchmark scripts: one real training run as a subprocess, and its results."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass
class RunResult:
    overrides: list[str]
    wall_s: float
    summary: Optional[dict]  # None if the run failed
    metrics: list[dict]
    error: str = ""

    def steps(self) -> list[dict]:
        return [m for m in self.metrics if m.get("step", 0) > 0 and "rollout/reward_mean" in m]

    def mean(self, key: str) -> float:
        values = [m[key] for m in self.steps() if key in m]
        return sum(values) / len(values) if values else float("nan")


def run_job(overrides: list[str], run_dir: Path) -> RunResult:
    """``python -m rlpipe.train <overrides> trainer.output_dir=<run_dir>``; a failed run is reported, not raised."""
    start = time.time()
    cmd = [sys.executable, "-m", "rlpipe.train", *overrides, f"trainer.output_dir={run_dir}",
           "logger.progress_bar=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return RunResult(overrides, wall, None, [], f"failed (exit {proc.returncode})")
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return RunResult(overrides, wall, json.loads((run_dir / "summary.json").read_text()), metrics)


def pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
