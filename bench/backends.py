"""The default job on each learner backend (FSDP2, DeepSpeed ZeRO-1/2/3), same seed and budget: held-out accuracy,
learner step time and peak learner memory, as a table.

    .venv/bin/python bench/backends.py [--steps 40] [--backends fsdp2,zero1,zero2,zero3] [--out FILE.md]

Real runs (Ray actors, vLLM, two learner ranks over gloo). Learner time per step is logprobs + update + weight
export (timing/logprobs, timing/update, timing/sync_weights); peak memory is each learner rank's peak resident set
on CPU (peak allocated GPU memory on GPU), averaged over the two ranks, at the end of the run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from runs import markdown_table, pct, run_job

BACKENDS = {
    "fsdp2": ["learner=fsdp2"],
    "zero1": ["learner=deepspeed", "learner.deepspeed.zero_stage=1"],
    "zero2": ["learner=deepspeed", "learner.deepspeed.zero_stage=2"],
    "zero3": ["learner=deepspeed", "learner.deepspeed.zero_stage=3"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--out-dir", default="outputs/bench_backends")
    ap.add_argument("--out", default=None, help="also write the table (markdown) here")
    args = ap.parse_args()

    rows = []
    for name in args.backends.split(","):
        r = run_job([*BACKENDS[name], f"trainer.total_steps={args.steps}",
                     f"trainer.eval_every_steps={args.eval_every}"], Path(args.out_dir) / name)
        if r.summary is None:
            rows.append([name, "-", "-", "-", "-", "-", r.error])
            continue
        learner_s = r.mean("timing/logprobs") + r.mean("timing/update") + r.mean("timing/sync_weights")
        peak = max((m.get("perf/learner_peak_mem_gib", 0.0) for m in r.steps()), default=float("nan"))
        s = r.summary
        rows.append([name, pct(s["eval_accuracy_initial"]), pct(s["eval_accuracy_final"]),
                     f"{learner_s:.3f} s", f"{r.mean('timing/update'):.3f} s", f"{peak:.2f} GiB",
                     f"{r.wall_s:.0f} s"])
        print(f"{name}: {s['eval_accuracy_initial']:.3f} -> {s['eval_accuracy_final']:.3f}, learner {learner_s:.3f} "
              f"s/step, peak {peak:.2f} GiB", flush=True)

    table = markdown_table(["backend", "initial accuracy", "final accuracy", "learner time / step", "update / step",
                            "peak learner memory", "wall time"], rows)
    print(f"\n{args.steps} steps each, default job, same seed\n{table}")
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
