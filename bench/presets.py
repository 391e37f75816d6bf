"""Every algorithm preset on the default job, same seed and budget; prints a table (and writes it as markdown).

    .venv/bin/python bench/presets.py [--steps 40] [--presets grpo,dapo,...] [--out docs/presets-table.md]

Each preset is a real run of ``python -m rlpipe.train algorithm=<preset>`` (Ray actors, vLLM, two FSDP2 ranks), so
the table measures the recipes end to end, warm-start shared (cached) between runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from runs import markdown_table, pct, run_job

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
        r = run_job([f"algorithm={preset}", f"trainer.total_steps={args.steps}",
                     f"trainer.eval_every_steps={args.eval_every}"], run_dir)
        if r.summary is None:
            rows.append([preset, "-", "-", "-", f"{r.wall_s:.0f} s", r.error])
            continue
        s = r.summary
        resets = sum(1 for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip())
        note = f"rounds/step {r.mean('filter/rounds'):.2f}" + (f", {resets} reference resets" if resets else "")
        rows.append([preset, pct(s["eval_accuracy_initial"]), pct(s["eval_accuracy_final"]),
                     pct(s["eval_accuracy_best"]), f"{r.wall_s:.0f} s", note])
        print(f"{preset}: {s['eval_accuracy_initial']:.3f} -> {s['eval_accuracy_final']:.3f} in {r.wall_s:.0f} s",
              flush=True)

    table = markdown_table(["preset", "initial accuracy", "final accuracy", "best", "wall time", "notes"], rows)
    print(f"\n{args.steps} steps each, greedy accuracy on 256 held-out problems, same seed\n{table}")
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
