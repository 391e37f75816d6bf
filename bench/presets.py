"""Every algorithm preset on the default job, same seed and budget; prints a table (and writes it as markdown).

    .venv/bin/python bench/presets.py [--steps 40] [--presets grpo,dapo,...] [--out docs/presets-table.md]

Each preset is a real run of ``python -m rlpipe.train algorithm=<preset>`` (Ray actors, vLLM, two FSDP2 ranks), so
the table measures the recipes end to end, warm-start shared (cached) between runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

PRESETS = ["grpo", "dr_grpo", "dapo", "agapo", "rloo", "reinforce_pp", "gspo", "prorl"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--out-dir", default="outputs/bench_presets")
    ap.add_argument("--out", default=None, help="also write the table (markdown) here")
    args = ap.parse_args()

    rows = []
    for preset in args.presets.split(","):
        run_dir = Path(args.out_dir) / preset
        start = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "rlpipe.train", f"algorithm={preset}", f"trainer.total_steps={args.steps}",
             f"trainer.eval_every_steps={args.eval_every}", f"trainer.output_dir={run_dir}", "logger.progress_bar=false"],
            capture_output=True, text=True)
        wall = time.time() - start
        if proc.returncode != 0:
            rows.append((preset, None, None, None, wall, f"failed (exit {proc.returncode})"))
            print(proc.stderr[-2000:], file=sys.stderr)
            continue
        s = json.loads((run_dir / "summary.json").read_text())
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        rounds = [m["filter/rounds"] for m in metrics if "filter/rounds" in m]
        resets = sum(1 for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip())
        note = f"rounds/step {sum(rounds) / len(rounds):.2f}" + (f", {resets} reference resets" if resets else "")
        rows.append((preset, s["eval_accuracy_initial"], s["eval_accuracy_final"], s["eval_accuracy_best"], wall, note))
        print(f"{preset}: {s['eval_accuracy_initial']:.3f} -> {s['eval_accuracy_final']:.3f} in {wall:.0f} s", flush=True)

    header = "| preset | initial accuracy | final accuracy | best | wall time | notes |\n|---|---|---|---|---|---|"
    lines = [header] + [
        f"| {p} | {_pct(a)} | {_pct(b)} | {_pct(c)} | {w:.0f} s | {n} |" for p, a, b, c, w, n in rows
    ]
    table = "\n".join(lines)
    print(f"\n{args.steps} steps each, greedy accuracy on 256 held-out problems, same seed\n{table}")
    if args.out:
        Path(args.out).write_text(table + "\n")


def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"


if __name__ == "__main__":
    main()
