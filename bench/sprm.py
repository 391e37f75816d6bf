"""XBai o4's score head on the default job: policy accuracy with and without the head (same seed and budget), then
test-time scaling of the head-trained policy on the held-out set (``python -m rlpipe.eval``).

    .venv/bin/python bench/sprm.py [--steps 80] [--head-lr 1e-3] [--samples 32] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

from runs import markdown_table, pct, run_job


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--out-dir", default="outputs/bench_sprm")
    ap.add_argument("--out", default=None, help="also write the tables (markdown) here")
    args = ap.parse_args()
    out = Path(args.out_dir)
    common = [f"trainer.total_steps={args.steps}"]
    runs = {
        "without head": run_job(common, out / "no_head"),
        "with head": run_job([*common, "model.score_head.enabled=true", f"model.score_head.lr={args.head_lr}"],
                             out / "head"),
    }
    rows = []
    for name, r in runs.items():
        if r.summary is None:
            sys.exit(f"{name}: {r.error}")
        rows.append([name, pct(r.summary["eval_accuracy_initial"]), pct(r.summary["eval_accuracy_final"]),
                     f"{r.mean('timing/update'):.3f} s", _last10(r, "sprm/auroc"),
                     _last10(r, "sprm/auroc_within_prompt")])
    training = markdown_table(["run", "initial accuracy", "final accuracy", "update / step",
                               "head AUROC, last 10 steps (fresh rollouts)", "same, within a prompt"], rows)
    print(f"\n{args.steps} steps, default job, same seed\n{training}", flush=True)

    eval_dir = out / "eval"
    proc = subprocess.run([sys.executable, "-m", "rlpipe.eval", f"model.path={out / 'head' / 'final_model'}",
                           f"eval.samples_per_prompt={args.samples}", f"eval.output_dir={eval_dir}",
                           "eval.budgets=[32,48,64]"], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    e = json.loads((eval_dir / "eval.json").read_text())
    scaling = markdown_table(
        ["metric", "held-out accuracy"],
        [[f"pass@{k}", pct(v)] for k, v in e["pass@k"].items()] + [[f"maj@{k}", pct(v)] for k, v in e["maj@k"].items()]
        + [[f"best-of-{k} by head", pct(v)] for k, v in e["best_of_n_by_head"].items()]
        + [[f"best-of-{k} by policy confidence", pct(v)] for k, v in e["best_of_n_by_confidence"].items()]
        + [["head AUROC (all candidates)", f"{e['head_auroc']:.3f}"],
           ["head AUROC within a question", f"{e['head_auroc_within_question']:.3f}"],
           ["policy confidence AUROC within a question", f"{e['confidence_auroc_within_question']:.3f}"],
           ["head time per candidate", f"{e['head_ms_per_candidate']:.3f} ms"]])
    print(f"\n{e['prompts']} held-out prompts x {e['samples_per_prompt']} samples\n{scaling}")
    if args.out:
        Path(args.out).write_text(training + "\n\n" + scaling + "\n")


def _last10(r, key: str) -> str:
    """Mean of a per-step metric over the last 10 steps where it is defined (NaN when a step's rollouts, or every
    prompt's, were all right or all wrong)."""
    values = [m[key] for m in r.steps() if not math.isnan(m.get(key, math.nan))]
    return f"{sum(values[-10:]) / len(values[-10:]):.3f}" if values else "-"


if __name__ == "__main__":
    main()
