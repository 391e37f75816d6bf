"""``rlpipe sft`` from random init against the default job's built-in warm-start, one after the other in one run.

    .venv/bin/python bench/sft_vs_warmstart.py [--sft-args "learner.num_workers=1 learner.threads_per_rank=2"]
                                               [--out bench/outputs/sft_vs_warmstart.json]

1. the warm-start (rlpipe/models/warmstart.py: one process, torch with 2 threads, 1,500 AdamW steps of 32 teacher
   traces) into a fresh cache directory, timed from the call to the written model; its greedy held-out accuracy
   (the default job's 256 problems, vLLM + the verifier) is then measured outside the timing;
2. ``python -m rlpipe.sft`` (same model preset, teacher, slip rate, steps, rows per step and learning-rate schedule),
   timed as a user sees it: process start to exit, Ray start-up, tokenising 48,000 traces, evaluations every 250
   steps and the export included. Its final held-out accuracy is the run's own last evaluation.

Prints one table (seconds, accuracy) and writes it as JSON. Run nothing else on the machine meanwhile: its speed
drifts by tens of percent over hours, so only the two rows of one run compare.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rlpipe.process_env import set_process_defaults  # noqa: E402

set_process_defaults()  # before torch / ray / vllm are imported


def warmstart_row(cache: Path) -> dict:
    from rlpipe.config.compose import load_config
    from rlpipe.driver.inputs import load_prompts
    from rlpipe.driver.session import Session
    from rlpipe.driver.trainer import heldout_accuracy
    from rlpipe.models.warmstart import warmstart

    start = time.time()
    model = warmstart(cache_dir=str(cache))
    seconds = time.time() - start
    cfg = load_config([f"model.path={model}"])
    tokenize, _, heldout = load_prompts(cfg, str(model))
    with Session(cfg, str(model)) as session:
        accuracy = heldout_accuracy(session.rollout, session.verifiers, tokenize, heldout,
                                    cfg.rollout.max_response_tokens)["eval/accuracy"]
    return {"what": "warm-start (built in, 1 process, 2 threads)", "seconds": round(seconds, 1),
            "heldout_accuracy": accuracy}


def sft_row(run_dir: Path, cache: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "rlpipe.sft", f"trainer.output_dir={run_dir}", f"model.tiny.cache_dir={cache}",
           "logger.progress_bar=false", *extra]
    start = time.time()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.time() - start
    if done.returncode != 0:
        raise SystemExit(f"rlpipe sft failed:\n{done.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"what": "rlpipe sft " + " ".join(extra), "seconds": round(seconds, 1),
            "heldout_accuracy": summary["eval_accuracy_final"], "heldout_loss": summary["heldout_loss_final"],
            "phase_seconds": summary["phase_seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sft-args", default="learner.num_workers=1 learner.threads_per_rank=2",
                   help="overrides of the rlpipe sft run (quoted, space separated)")
    p.add_argument("--out", default=str(REPO / "bench" / "outputs" / "sft_vs_warmstart.json"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="rlpipe-sft-bench-") as tmp:
        tmp = Path(tmp)
        rows = [warmstart_row(tmp / "warmstart-cache"), sft_row(tmp / "sft", tmp / "init-cache",
                                                                shlex.split(args.sft_args))]
    print(f"\n{'':50} {'seconds':>8} {'held-out accuracy':>18}")
    for r in rows:
        print(f"{r['what'][:50]:50} {r['seconds']:>8.1f} {100 * r['heldout_accuracy']:>17.1f}%")
    print(f"\nrlpipe sft / warm-start time: {rows[1]['seconds'] / rows[0]['seconds']:.2f}x; accuracy "
          f"{100 * (rows[1]['heldout_accuracy'] - rows[0]['heldout_accuracy']):+.1f} points")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "sft_args": args.sft_args}, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
