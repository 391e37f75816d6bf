"""Score a file of completions offline with the same verifiers training uses.

    python -m rlpipe.score --verifier math --input IN.jsonl --output OUT.jsonl [--workers 4] [--option timeout_s=10]

Each input row has a ``completion`` and the task's gold fields: ``answer`` for math; for code ``tests`` (a list of
assert statements, optional ``setup``), or HumanEval's ``test`` + ``entry_point``, or ``stdin`` / ``expected_stdout``
lists. Each output row is the input row plus ``reward``, ``verdict`` and ``details``, in input order. A row that
cannot be scored (malformed JSON, no completion, missing gold fields) gets verdict ``invalid_input`` with the reason,
is counted and excluded from the mean reward. Timeouts and infrastructure errors are retried (``--retries``) and
reported as such, never as wrong answers. A summary (counts per verdict, mean reward, time) is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Optional

GOLD_FIELDS = {"math": ("answer",), "code": ("tests", "setup", "test", "entry_point", "stdin", "expected_stdout")}

_verifier = None  # one per worker process


def _init_worker(name: str, options: dict[str, Any]) -> None:
    global _verifier
    from rlpipe.verify.batch_scorer import BatchVerifier

    _verifier = BatchVerifier(name, options)


def _score_chunk(items: list[tuple[str, dict]]) -> list[dict]:
    return [v.to_json() for v in _verifier.score_batch(items)]


def parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option takes key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def read_input(path: str, verifier: str) -> tuple[list[Optional[dict]], list[Optional[str]]]:
    """(rows, problems): rows[i] is the parsed row (None if unparsable); problems[i] says why row i is unusable."""
    rows, problems = [], []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                rows.append(None)
                problems.append(f"line {n}: not a JSON object ({type(e).__name__}: {e})")
                continue
            problem = None
            if not isinstance(row, dict):
                problem, row = f"line {n}: not a JSON object", None
            elif not isinstance(row.get("completion"), str):
                problem = f"line {n}: no 'completion' string"
            elif not any(k in row for k in GOLD_FIELDS[verifier]):
                problem = f"line {n}: no gold fields (expected one of {', '.join(GOLD_FIELDS[verifier])})"
            rows.append(row)
            problems.append(problem)
    return rows, problems


def score_rows(rows: list[dict], verifier: str, options: dict[str, Any], workers: int,
               retries: int) -> list[dict]:
    """Verdict dicts in row order; timeout/error verdicts are re-scored up to ``retries`` times."""
    items = [(r["completion"], {k: r[k] for k in GOLD_FIELDS[verifier] if k in r}) for r in rows]
    results: list[Optional[dict]] = [None] * len(items)
    pending = list(range(len(items)))
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(verifier, options)) as pool:
        for attempt in range(retries + 1):
            chunk = max(1, len(pending) // (workers * 4))
            parts = [pending[i:i + chunk] for i in range(0, len(pending), chunk)]
            futures = [pool.submit(_score_chunk, [items[j] for j in part]) for part in parts]
            still = []
            for part, future in zip(parts, futures):
                for j, verdict in zip(part, future.result()):
                    verdict["details"]["attempts"] = attempt + 1
                    results[j] = verdict
                    if verdict["verdict"] in ("timeout", "error"):
                        still.append(j)
            if not still:
                break
            pending = still
    return results


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="rlpipe score", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verifier", required=True, choices=sorted(GOLD_FIELDS))
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--workers", type=int, default=2, help="verifier processes (default 2)")
    ap.add_argument("--retries", type=int, default=2, help="re-scores of a timeout/error verdict (default 2)")
    ap.add_argument("--option", action="append", type=parse_option, default=[],
                    help="verifier option key=value (JSON value), e.g. timeout_s=10 or fallback=last_number")
    args = ap.parse_args(argv)
    from pathlib import Path

    if not Path(args.input).is_file():
        ap.error(f"--input {args.input}: no such file")
    if not Path(args.output).resolve().parent.is_dir():
        ap.error(f"--output {args.output}: its directory does not exist")
    if args.workers < 1 or args.retries < 0:
        ap.error("--workers must be >= 1 and --retries >= 0")
    try:  # a bad --option fails here, once, naming it, instead of in every worker process
        from rlpipe.verify.batch_scorer import BatchVerifier

        BatchVerifier(args.verifier, dict(args.option))
    except (TypeError, ValueError) as e:
        ap.error(f"--option: {e}")
    start = time.time()
    rows, problems = read_input(args.input, args.verifier)
    usable = [i for i, p in enumerate(problems) if p is None]
    verdicts = score_rows([rows[i] for i in usable], args.verifier, dict(args.option), args.workers, args.retries)
    by_row = dict(zip(usable, verdicts))
    counts: Counter = Counter()
    rewards = []
    with open(args.output, "w", encoding="utf-8") as out:
        for i, (row, problem) in enumerate(zip(rows, problems)):
            if problem is not None:
                result = {"verdict": "invalid_input", "reward": None, "details": {"reason": problem}}
                print(f"rlpipe score: skipped {problem}", file=sys.stderr)
            else:
                result = by_row[i]
                if result["verdict"] in ("correct", "wrong", "parse_fail"):
                    rewards.append(result["reward"])
                else:  # timeout / error after the retries: no reward, never a 0 that reads like a wrong answer
                    result["reward"] = None
            counts[result["verdict"]] += 1
            out.write(json.dumps({**(row or {}), **result}, default=str) + "\n")
    elapsed = time.time() - start
    mean = sum(rewards) / len(rewards) if rewards else float("nan")
    print(f"rlpipe score: {len(rows)} rows in {elapsed:.1f} s -> {args.output}")
    print("  verdicts: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    print(f"  mean reward over {len(rewards)} scored rows: {mean:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
