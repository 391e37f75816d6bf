"""XBai o4's score head on the default job: policy accuracy with and without the head (same seeds and budget), then
test-time scaling of each head-trained policy on the held-out set (``python -m rlpipe.eval``), beside the free
baselines (the policy's mean and lowest sampled-token logprob).

    .venv/bin/python bench/sprm.py [--kind step|dense] [--seeds 0,1,2] [--steps 80] [--head-lr LR] [--samples 32]
                                   [--head-option model.score_head.pooling=attention ...] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

from runs import markdown_table, pct, run_job

PREFIX = {"step": ("head", "sprm"), "dense": ("dense_head", "dense_prm")}  # eval.json key prefix, metric prefix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=sorted(PREFIX), default="step")
    ap.add_argument("--seeds", default="0", help="trainer.seed values, comma-separated (the policy's spread)")
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--head-lr", type=float, default=None, help="model.score_head.lr (default: the kind's own)")
    ap.add_argument("--head-option", action="append", default=[], help="another model.score_head.* override")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--out-dir", default="outputs/bench_sprm")
    ap.add_argument("--out", default=None, help="also write the tables (markdown) here")
    args = ap.parse_args()
    out = Path(args.out_dir)
    seeds = [int(s) for s in args.seeds.split(",")]
    head = ["model.score_head.enabled=true", f"model.score_head.kind={args.kind}", *args.head_option]
    if args.head_lr is not None:
        head.append(f"model.score_head.lr={args.head_lr}")
    eval_key, metric = PREFIX[args.kind]

    rows, without, with_head, evals = [], [], [], {}
    for seed in seeds:
        common = [f"trainer.total_steps={args.steps}", f"trainer.seed={seed}"]
        plain = run_job(common, out / f"no_head_s{seed}")
        trained = run_job([*common, *head], out / f"{args.kind}_head_s{seed}")
        for name, r in (("without head", plain), ("with head", trained)):
            if r.summary is None:
                sys.exit(f"seed {seed}, {name}: {r.error}")
        without.append(plain.summary["eval_accuracy_final"])
        with_head.append(trained.summary["eval_accuracy_final"])
        evals[seed] = _evaluate(out / f"{args.kind}_head_s{seed}" / "final_model", out / f"eval_s{seed}", args.samples)
        e = evals[seed]
        rows.append([str(seed), pct(plain.summary["eval_accuracy_final"]), pct(trained.summary["eval_accuracy_final"]),
                     _last10(trained, f"{metric}/auroc_within_prompt"),
                     _last10(trained, "confidence/auroc_within_prompt"),
                     f"{e[f'{eval_key}_auroc_within_question']:.3f}", f"{e['confidence_auroc_within_question']:.3f}",
                     f"{e['min_logprob_auroc_within_question']:.3f}"])
    rows.append(["mean", pct(statistics.mean(without)), pct(statistics.mean(with_head)), "", "", "", "", ""])
    training = markdown_table(
        ["trainer.seed", f"held-out accuracy after {args.steps} steps, without head", f"with the {args.kind} head",
         "head AUROC within a prompt, last 10 steps (fresh rollouts)", "policy confidence, same",
         "held-out: head AUROC within a question", "mean token logprob, same", "lowest token logprob, same"], rows)
    print(f"\n{args.steps} steps, default job; head: {' '.join(head)}\n{training}", flush=True)

    e = evals[seeds[0]]
    ks = list(e["pass@k"])
    scaling = markdown_table(
        ["metric"] + [f"k = {k}" for k in e[f"best_of_n_by_{eval_key}"]],
        [["best-of-k by the head"] + [pct(v) for v in e[f"best_of_n_by_{eval_key}"].values()],
         ["best-of-k by mean token logprob"] + [pct(v) for v in e["best_of_n_by_confidence"].values()],
         ["best-of-k by lowest token logprob"] + [pct(v) for v in e["best_of_n_by_min_logprob"].values()]])
    reference = markdown_table(
        ["pass@1", *(f"pass@{k}" for k in ks if k != "1"), *(f"maj@{k}" for k in e["maj@k"]),
         "head ms per candidate", "forward ms per candidate", "head ÷ forward"],
        [[pct(e["pass@k"]["1"]), *(pct(e["pass@k"][k]) for k in ks if k != "1"),
          *(pct(v) for v in e["maj@k"].values()), f"{e[f'{eval_key}_ms_per_candidate']:.3f}",
          f"{e['forward_ms_per_candidate']:.3f}", f"{100 * e[f'{eval_key}_cost_frac_of_forward']:.2f}%"]])
    print(f"\nseed {seeds[0]}: {e['prompts']} held-out prompts x {e['samples_per_prompt']} samples\n{scaling}\n\n"
          f"{reference}")
    if args.out:
        Path(args.out).write_text(training + "\n\n" + scaling + "\n\n" + reference + "\n")


def _evaluate(model: Path, out_dir: Path, samples: int) -> dict:
    proc = subprocess.run([sys.executable, "-m", "rlpipe.eval", f"model.path={model}",
                           f"eval.samples_per_prompt={samples}", f"eval.output_dir={out_dir}"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    return json.loads((out_dir / "eval.json").read_text())


def _last10(r, key: str) -> str:
    """Mean of a per-step metric over the last 10 steps where it is defined (NaN when a step's rollouts, or every
    prompt's, were all right or all wrong)."""
    values = [m[key] for m in r.steps() if not math.isnan(m.get(key, math.nan))]
    return f"{sum(values[-10:]) / len(values[-10:]):.3f}" if values else "-"


if __name__ == "__main__":
    main()
