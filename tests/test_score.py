"""`python -m rlpipe.score`: verdicts per row in input order, invalid rows counted and kept out of the mean reward,
timeouts retried and reported as timeouts (no reward), never as wrong answers."""

import json
import subprocess
import sys

from conftest import REPO


def test_score_math_file(tmp_path):
    rows = [
        {"completion": "so \\boxed{\\frac{1}{2}}", "answer": "\\frac{2}{4}"},
        {"completion": "so \\boxed{3}", "answer": "4"},
        {"completion": "no answer here", "answer": "4"},
        {"completion": "\\boxed{9^{9^{9^{9}}}}", "answer": "1"},
        {"completion": "gold is missing"},
    ]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    proc = subprocess.run([sys.executable, "-m", "rlpipe.score", "--verifier", "math", "--input", str(inp),
                           "--output", str(out), "--option", "timeout_s=0.5", "--retries", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["verdict"] for g in got] == ["correct", "wrong", "parse_fail", "timeout", "invalid_input",
                                           "invalid_input"]
    assert got[0]["completion"] == rows[0]["completion"] and got[0]["reward"] == 1.0
    assert got[3]["reward"] is None and got[3]["details"]["attempts"] == 2
    assert "mean reward over 3 scored rows: 0.3333" in proc.stdout
    assert "invalid_input 2" in proc.stdout and "timeout 1" in proc.stdout
