"""Run the default job twice with the same settings and say whether the two metrics.jsonl files match.

    .venv/bin/python bench/repeatability.py --steps 20
    .venv/bin/python bench/repeatability.py --steps 20 --env ATEN_CPU_CAPABILITY=avx2     # second run only
    .venv/bin/python bench/repeatability.py --override learner.micro_batch_samples=32      # both runs
    .venv/bin/python bench/repeatability.py --compare RUN_A/metrics.jsonl RUN_B/metrics.jsonl

Every numeric key of every step is compared (wall-clock keys timing/*, time/*, perf/* are left out: they are not
results). Exit status 0 when all compared values are bit-identical, 1 otherwise. The two runs use the same
warm-start cache ($RLPIPE_CACHE or ~/.cache/rlpipe), so the warm-start is built at most once (by the first run).
The runs import rlpipe from this script's checkout (PYTHONPATH, so Ray actors do too); a warning is printed when
the code under rlpipe/ changed between the two runs (someone editing it meanwhile), since that alone can differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_RESULTS = ("timing/", "time/", "perf/")


def code_fingerprint() -> str:
    h = hashlib.sha256()
    for f in sorted((ROOT / "rlpipe").rglob("*")):
        if f.is_file() and f.suffix in (".py", ".yaml"):
            h.update(str(f.relative_to(ROOT)).encode() + f.read_bytes())
    return h.hexdigest()[:12]


def run(out: Path, steps: int, eval_every: int, overrides: list[str], env: dict[str, str]) -> tuple[Path, str]:
    cmd = [sys.executable, "-m", "rlpipe", "train", f"trainer.total_steps={steps}",
           f"trainer.eval_every_steps={eval_every}", f"trainer.output_dir={out}", "logger.progress_bar=false",
           *overrides]
    print(f"$ {' '.join(f'{k}={v}' for k, v in env.items())} {' '.join(cmd)}", flush=True)
    t0, code = time.time(), code_fingerprint()
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))}
    with open(out.with_suffix(".log"), "w") as log:
        subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, check=True)
    if code != code_fingerprint():
        print("  WARNING: rlpipe/ changed while this run was going", flush=True)
    print(f"  done in {time.time() - t0:.0f} s, code {code} (log {out.with_suffix('.log')})", flush=True)
    return out / "metrics.jsonl", code


def load(path: Path) -> dict[int, dict[str, float]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["step"]: {k: v for k, v in r.items() if isinstance(v, (int, float)) and k != "step"
                        and not k.startswith(NOT_RESULTS)} for r in rows}


def compare(a: Path, b: Path) -> bool:
    ra, rb = load(a), load(b)
    steps = sorted(set(ra) | set(rb))
    keys = sorted({k for r in (*ra.values(), *rb.values()) for k in r})
    identical, one_sided = True, []
    print(f"\n{'metric':32} {'max |a-b|':>11} {'first differing step':>21}")
    for key in keys:
        diffs = [(s, abs(ra[s][key] - rb[s][key])) for s in steps
                 if key in ra.get(s, {}) and key in rb.get(s, {})]
        if not diffs:
            one_sided.append(key)
            continue
        worst = max(d for _, d in diffs)
        first = next((s for s, d in diffs if d != 0), None)
        identical &= worst == 0
        print(f"{key:32} {worst:11.3g} {'-' if first is None else first:>21}")
    if one_sided:
        print(f"only in one run (not compared): {', '.join(one_sided)}")
    evals = [s for s in steps if "eval/accuracy" in ra.get(s, {}) and "eval/accuracy" in rb.get(s, {})]
    print("\neval/accuracy by step (a / b): " + ", ".join(
        f"{s}: {100 * ra[s]['eval/accuracy']:.1f}/{100 * rb[s]['eval/accuracy']:.1f}" for s in evals))
    verdict = "IDENTICAL" if identical else "DIFFERENT"
    print(f"\n{verdict}: {len(keys) - len(one_sided)} metrics over {len(steps)} steps, {a} vs {b}")
    return identical


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("/tmp") / f"rlpipe-repeat-{time.strftime('%Y%m%d-%H%M%S')}")
    p.add_argument("--override", action="append", default=[], help="Hydra override for both runs (repeatable)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable for the second run only (repeatable)")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="only compare two metrics.jsonl files")
    args = p.parse_args()
    if args.compare:
        return 0 if compare(*args.compare) else 1
    env_b = dict(kv.split("=", 1) for kv in args.env)
    args.out.mkdir(parents=True, exist_ok=True)
    a, code_a = run(args.out / "a", args.steps, args.eval_every, args.override, {})
    b, code_b = run(args.out / "b", args.steps, args.eval_every, args.override, env_b)
    if code_a != code_b:
        print(f"WARNING: the two runs ran different code ({code_a} vs {code_b}): rlpipe/ was edited in between")
    return 0 if compare(a, b) else 1


if __name__ == "__main__":
    sys.exit(main())
