"""The end of a run: ``summary.json``, ``reward_curve.png`` and the short summary printed to the console."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any



def read_metrics(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_reward_curve(rows: list[dict[str, Any]], out: Path) -> None:
    """Training reward and greedy held-out accuracy against step."""
    # Imported here, at the end of a run, not during its start-up; non-interactive: runs are headless or Ray jobs.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(r["step"], r["rollout/reward_mean"]) for r in rows if r.get("rollout/reward_mean") is not None]
    evals = [(r["step"], r["eval/accuracy"]) for r in rows if r.get("eval/accuracy") is not None]
    if train:
        ax.plot(*zip(*train), label="training reward (mean)", alpha=0.8)
    if evals:
        ax.plot(*zip(*evals), marker="o", label="held-out accuracy (greedy)")
    ax.set_xlabel("step")
    ax.set_ylabel("reward / accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def phase_times(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Total seconds per ``timing/<phase>`` over the run (``timing/step``, the wall clock of whole steps, is not a
    phase: phases overlap in asynchronous mode)."""
    totals: dict[str, float] = {}
    for r in rows:
        for k, v in r.items():
            if k.startswith("timing/") and k != "timing/step" and v is not None:
                totals[k.removeprefix("timing/")] = totals.get(k.removeprefix("timing/"), 0.0) + v
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def write_summary(run_dir: Path, extra: dict[str, Any]) -> dict[str, Any]:
    rows = read_metrics(run_dir / "metrics.jsonl")
    evals = [r["eval/accuracy"] for r in rows if r.get("eval/accuracy") is not None]
    summary = {
        "eval_accuracy_initial": evals[0] if evals else None,
        "eval_accuracy_final": evals[-1] if evals else None,
        "eval_accuracy_best": max(evals) if evals else None,
        "reward_mean_first": next((r["rollout/reward_mean"] for r in rows if "rollout/reward_mean" in r), None),
        "reward_mean_last": next((r["rollout/reward_mean"] for r in reversed(rows) if "rollout/reward_mean" in r),
                                 None),
        "phase_seconds": phase_times(rows),
        **extra,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_reward_curve(rows, run_dir / "reward_curve.png")
    return summary


def format_summary(summary: dict[str, Any], run_dir: Path) -> str:
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    lines = [
        "",
        f"rlpipe run finished: {summary['steps']} steps in {summary['wall_seconds']:.0f} s",
        f"  held-out accuracy (greedy): {pct(summary['eval_accuracy_initial'])} -> {pct(summary['eval_accuracy_final'])}"
        f"  (best {pct(summary['eval_accuracy_best'])})",
    ]
    if summary.get("heldout_loss_initial") is not None:
        lines.append(f"  held-out loss: {summary['heldout_loss_initial']:.4f} -> {summary['heldout_loss_final']:.4f}")
    if summary.get("reward_mean_first") is not None:
        lines.append(f"  training reward: {summary['reward_mean_first']:.3f} -> {summary['reward_mean_last']:.3f}")
    phases = summary.get("phase_seconds", {})
    if phases:
        lines.append("  time per phase: " + ", ".join(f"{k} {v:.0f}s" for k, v in phases.items()))
    lines.append(f"  outputs: {run_dir}/ (metrics.jsonl, summary.json, reward_curve.png)")
    return "\n".join(lines)
