"""Synchronous vs asynchronous RL on the default job, in one run, and the off-policy corrections under staleness.

    .venv/bin/python bench/async_modes.py speed  [--steps 40]   # sync vs k=1: accuracy after N steps, s/step
    .venv/bin/python bench/async_modes.py stale  [--steps 40]   # k=4: correction none vs tis vs decoupled vs mis

Each mode is a real `rlpipe train` run (Ray actors: one vLLM engine, one verifier, two FSDP2 ranks), one after the
other on the same machine, same seed and warm-started model. Held-out greedy accuracy on 256 problems every 10
steps; the table gives the final and best accuracy and the median wall-clock seconds per step (`timing/step`).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from runs import markdown_table, pct, run_job

MODES = {
    "speed": {
        "sync": [],
        "async k=1": ["trainer.max_staleness_steps=1"],
        "async k=1, tis, old=recompute": ["trainer.max_staleness_steps=1", "algorithm.rollout_correction=tis"],
        "sync, old=rollout": ["algorithm.old_logprobs=rollout"],
        "async k=1, old=rollout": ["trainer.max_staleness_steps=1", "algorithm.old_logprobs=rollout"],
    },
    "stale": {
        "sync (reference)": [],
        "k=4, none, old=rollout (naive PPO)": ["trainer.max_staleness_steps=4", "algorithm.old_logprobs=rollout"],
        "k=4, none, old=recompute": ["trainer.max_staleness_steps=4"],
        "k=4, tis": ["trainer.max_staleness_steps=4", "algorithm.rollout_correction=tis"],
        "k=4, decoupled": ["trainer.max_staleness_steps=4", "algorithm.rollout_correction=decoupled"],
        "k=4, mis": ["trainer.max_staleness_steps=4", "algorithm.rollout_correction=mis"],
    },
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suite", choices=sorted(MODES))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--modes", default=None, help="subset of the suite's mode names, separated by |")
    ap.add_argument("--extra", default="", help="overrides for every run, space-separated")
    ap.add_argument("--out-dir", default="outputs/bench_async")
    args = ap.parse_args()
    modes = MODES[args.suite]
    chosen = args.modes.split("|") if args.modes else list(modes)
    rows, results = [], {}
    for name in chosen:
        slug = "".join(ch if ch.isalnum() else "_" for ch in name)
        overrides = [f"trainer.total_steps={args.steps}", "trainer.eval_every_steps=10", *modes[name],
                     *args.extra.split()]
        result = run_job(overrides, Path(args.out_dir) / args.suite / slug)
        results[name] = result
        if result.summary is None:
            rows.append([name, result.error, "", "", "", ""])
            continue
        evals = [(m["step"], m["eval/accuracy"]) for m in result.metrics if "eval/accuracy" in m]
        per_step = statistics.median(m["timing/step"] for m in result.steps())
        stale = result.mean("async/staleness_mean")
        rows.append([name, pct(evals[0][1]), pct(evals[-1][1]), pct(max(a for _, a in evals)), f"{per_step:.2f}",
                     f"{stale:.2f}", " ".join(f"{s}:{100 * a:.1f}" for s, a in evals)])
        print(f"{name}: {rows[-1]}", flush=True)
    print()
    print(markdown_table(["mode", "initial", f"step {args.steps}", "best", "s/step (median)", "mean staleness",
                          "accuracy by step"], rows))
    sync = next((r for n, r in results.items() if n.startswith("sync") and r.summary), None)
    if args.suite == "speed" and sync is not None:
        base = statistics.median(m["timing/step"] for m in sync.steps())
        for name, r in results.items():
            if r.summary and r is not sync:
                print(f"  {name}: {base / statistics.median(m['timing/step'] for m in r.steps()):.2f}x faster per "
                      f"step than sync")


if __name__ == "__main__":
    main()
