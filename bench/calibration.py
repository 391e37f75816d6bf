"""Calibration on the tiny task (issue 14, point 3; docs/modes.md): does a length reward cut the easiest problems'
tokens without costing held-out accuracy?

    .venv/bin/python bench/calibration.py [--weights 0.2,0.4] [--first-steps 40] [--steps 40]
                                          [--advantage dr_grpo] [--out-dir outputs/bench_calibration]

1. ``rlpipe sft`` in reasoning mode on a re-checking teacher (1-4 operations; each step written again as "Check: ..."
   90 % of the time, so correct solutions of one problem differ in length), from random init (~13 min; reused when
   its directory already holds a model);
2. ``rlpipe train`` from it, ``--first-steps`` steps without a length reward (Kimi k1.5 turns the penalty on only
   after RL without it);
3. from that model, ``--steps`` more steps each: without a length reward (the baseline), and with Kimi's group length
   reward at each of ``--weights`` (``algorithm.advantage`` as given: under GRPO's division by the group's standard
   deviation the weight hardly matters, docs/modes.md says why);
4. ``rlpipe eval`` of every model on the 256 held-out problems (1-4 operations) and on 128 one-operation problems,
   EXAONE's reasoning sampling (T 0.6, top-p 0.95), 4 samples each.

Prints one table: greedy held-out accuracy (the run's last evaluation), sampled accuracy, mean tokens, and the
one-operation problems' tokens and accuracy, each against the baseline. About 9 minutes per run after the SFT.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from runs import markdown_table, pct, run_job

TASK = ["data.mode=reasoning", "data.operations=[1,2,3,4]", "rollout.max_response_tokens=128"]


def sft(out: Path) -> Path:
    model = out / "sft" / "final_model"
    if not (model / "config.json").exists():
        _command("sft", "model.tiny.teacher_slip_rate=0.2", "sft.teacher_recheck_rate=0.9", "learner.num_workers=1",
                 "learner.threads_per_rank=2", f"trainer.output_dir={out / 'sft'}")
    return model


def _command(name: str, *overrides: str) -> None:
    """``python -m rlpipe.<name>`` on the task; a failure ends the bench with its stderr."""
    cmd = [sys.executable, "-m", f"rlpipe.{name}", *TASK, "logger.progress_bar=false", *overrides]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"rlpipe {name} failed:\n{done.stderr[-2000:]}")


def train(start: Path, steps: int, extra: list[str], run_dir: Path) -> dict:
    if not (run_dir / "final_model" / "config.json").exists():
        r = run_job([f"model.path={start}", *TASK, f"trainer.total_steps={steps}", *extra], run_dir)
        if r.summary is None:
            sys.exit(f"{run_dir.name}: {r.error}")
    return json.loads((run_dir / "summary.json").read_text())


def evaluate(model: Path, out: Path, extra: list[str]) -> dict:
    """The reasoning-mode row of ``rlpipe eval`` (accuracy, mean tokens, tokens by pass rate)."""
    _command("eval", f"model.path={model}", "eval.samples_per_prompt=4", f"eval.output_dir={out}", *extra)
    rows = json.loads((out / "eval.json").read_text())["by_mode_and_budget"]
    return next(r for r in rows if r["thinking_budget"] is None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="0.2,0.4", help="algorithm.length_penalty_weight values, comma-separated")
    ap.add_argument("--first-steps", type=int, default=40)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--advantage", default="dr_grpo", help="algorithm.advantage of the continuations")
    ap.add_argument("--out-dir", default="outputs/bench_calibration")
    args = ap.parse_args()
    out = Path(args.out_dir).resolve()
    first = out / "rl_first"
    train(sft(out), args.first_steps, [], first)
    runs = {"no length reward": []}
    for w in args.weights.split(","):
        runs[f"Kimi, weight {w}"] = ["algorithm.length_penalty=kimi", f"algorithm.length_penalty_weight={w}"]
    results = {}
    for i, (name, extra) in enumerate(runs.items()):
        run_dir = out / f"continue_{i}"
        summary = train(first / "final_model", args.steps, [f"algorithm.advantage={args.advantage}", *extra],
                        run_dir)
        results[name] = {
            "greedy": summary["eval_accuracy_final"],
            "all": evaluate(run_dir / "final_model", run_dir / "eval_all", []),
            "easiest": evaluate(run_dir / "final_model", run_dir / "eval_1op",
                                ["data.operations=[1]", "data.heldout_size=128"]),
        }
    base = results["no length reward"]
    rows = []
    for name, r in results.items():
        cut = 1 - r["easiest"]["mean_tokens"] / base["easiest"]["mean_tokens"]
        rows.append([name, f"{pct(r['greedy'])} ({100 * (r['greedy'] - base['greedy']):+.1f})",
                     f"{pct(r['all']['accuracy'])} ({100 * (r['all']['accuracy'] - base['all']['accuracy']):+.1f})",
                     f"{r['all']['mean_tokens']:.1f}", f"{r['easiest']['mean_tokens']:.1f} ({-100 * cut:+.0f} %)",
                     pct(r["easiest"]["accuracy"])])
    print(f"\n{args.steps} steps ({args.advantage}) from the model of {args.first_steps} RL steps without a length "
          f"reward:\n")
    print(markdown_table(["run", "greedy accuracy", "sampled accuracy", "mean tokens", "tokens, 1-operation",
                          "accuracy, 1-operation"], rows))
    (out / "calibration.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")
    print(f"\nwritten: {out / 'calibration.json'}")


if __name__ == "__main__":
    main()
