"""Prompts from data set files: jsonl (optionally gzipped), json, parquet, and Hugging Face datasets saved to disk.

A *format* names the fields of a standard data set and how its gold fields look (``FORMATS``); ``fields`` overrides
field names for files that spell them differently. Every row is checked before training starts; a bad row is either
an error naming the file, row and reason (``on_bad_row="error"``) or skipped, counted per reason and written with
its reason to a quarantine file (``on_bad_row="skip"``). Nothing bad reaches training silently.

Row checks: JSON that does not parse or is not an object, undecodable bytes, a missing or empty prompt, a missing
gold field, a gold answer the math grader cannot read, a code task without tests, and (where a tokenizer is given)
a prompt longer than ``max_prompt_tokens`` after the chat template.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

from rlpipe.errors import UserError

log = logging.getLogger(__name__)

MATH_INSTRUCTION = "Solve the problem step by step. Put the final answer in \\boxed{}."
CODE_INSTRUCTION = "Write a Python solution. Put the complete code in one ```python code block."


@dataclass(frozen=True)
class DataFormat:
    """How one data set's rows become (prompt text, gold fields)."""

    kind: str  # "math" | "code": the verifier that can score it
    fields: dict[str, str]  # canonical name -> field name in the file
    instruction: str

    def prompt(self, row: dict[str, Any], f: dict[str, str]) -> str:
        text = _text(row, f["prompt"])
        if "tests_shown" in f and row.get(f["tests_shown"]):  # MBPP shows its first test: it names the function
            text += "\nYour code should pass this test:\n" + row[f["tests_shown"]][0]
        return f"{text}\n\n{self.instruction}"


FORMATS: dict[str, DataFormat] = {
    "gsm8k": DataFormat("math", {"prompt": "question", "answer": "answer"}, MATH_INSTRUCTION),
    "math": DataFormat("math", {"prompt": "problem", "answer": "answer"}, MATH_INSTRUCTION),
    "aime": DataFormat("math", {"prompt": "problem", "answer": "answer"}, MATH_INSTRUCTION),
    "mbpp": DataFormat("code", {"prompt": "text", "tests": "test_list", "setup": "test_setup_code",
                                "tests_shown": "test_list"}, CODE_INSTRUCTION),
    "humaneval": DataFormat("code", {"prompt": "prompt", "test": "test", "entry_point": "entry_point"},
                            "Complete this Python function. " + CODE_INSTRUCTION),
    "stdio": DataFormat("code", {"prompt": "question", "stdin": "inputs", "expected_stdout": "outputs"},
                        "Read from standard input and write to standard output. " + CODE_INSTRUCTION),
}
FORMATS["math500"] = FORMATS["math"]
ON_BAD_ROW = ("error", "skip")
T = TypeVar("T")


class BadRow(ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class DataError(UserError):
    """A data set file that cannot be used (or a bad row, with ``on_bad_row="error"``)."""


@dataclass
class LoadReport:
    path: str
    rows: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in self.skipped.most_common()) or "none"
        return f"{self.path}: kept {self.kept} of {self.rows} rows; skipped: {reasons}"


@dataclass(frozen=True)
class Example:
    uid: str
    prompt: str
    gold: dict[str, Any]


def read_rows(path: str | Path, split: Optional[str] = None) -> Iterator[tuple[int, Any]]:
    """(row number, row or BadRow) for every row of a jsonl(.gz) / json / parquet file or a saved HF dataset."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {p} does not exist")
    if p.is_dir():
        yield from _read_hf_dataset(p, split)
    elif p.name.endswith((".jsonl", ".jsonl.gz")):
        opener = gzip.open if p.name.endswith(".gz") else open
        with opener(p, "rb") as f:
            for n, raw in enumerate(f, 1):
                if raw.strip():
                    yield n, _parse_json_line(raw, n)
    elif p.suffix == ".json":
        try:
            rows = json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise DataError(f"{p}: not a readable JSON file ({e})") from None
        if not isinstance(rows, list):
            raise DataError(f"{p}: a .json data file must hold a list of objects")
        yield from enumerate(rows, 1)
    elif p.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise DataError("reading parquet needs pyarrow: pip install 'rlpipe[data]'") from e
        try:
            table = pq.read_table(p)
        except Exception as e:  # noqa: BLE001 - pyarrow raises its own error types for a damaged file
            raise DataError(f"{p}: not a readable parquet file ({str(e).splitlines()[0][:200]})") from None
        yield from enumerate(table.to_pylist(), 1)
    else:
        raise DataError(f"{p}: unknown data file type (expected .jsonl, .jsonl.gz, .json, .parquet or a directory "
                        f"saved with datasets' save_to_disk)")


def _parse_json_line(raw: bytes, n: int):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return BadRow("undecodable", f"row {n}: not UTF-8 ({e})")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return BadRow("malformed_json", f"row {n}: malformed JSON ({e})")


def _read_hf_dataset(p: Path, split: Optional[str]):
    try:
        from datasets import DatasetDict, load_from_disk
    except ImportError as e:
        raise DataError("reading a saved Hugging Face dataset needs datasets: pip install 'rlpipe[data]'") from e
    try:
        ds = load_from_disk(str(p))
    except Exception as e:  # noqa: BLE001 - datasets raises several types for a directory it cannot read
        raise DataError(f"{p}: not a dataset saved with save_to_disk ({str(e).splitlines()[0][:200]})") from None
    if isinstance(ds, DatasetDict):
        if split is None:
            if len(ds) != 1:
                raise DataError(f"{p} holds splits {sorted(ds)}: choose one with data.split")
            split = next(iter(ds))
        if split not in ds:
            raise DataError(f"{p} has no split {split!r} (it has {sorted(ds)})")
        ds = ds[split]
    yield from enumerate(ds, 1)


def _text(row: dict[str, Any], name: str) -> str:
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadRow("empty_prompt" if name in row else "missing_field",
                      f"field {name!r} is {'empty' if name in row else 'missing'}")
    return value


def gold_fields(fmt: DataFormat, row: dict[str, Any], f: dict[str, str]) -> dict[str, Any]:
    """The gold dict a verifier scores against, checked: math needs a readable answer, code needs tests."""
    if fmt.kind == "math":
        if f["answer"] not in row or row[f["answer"]] in (None, ""):
            raise BadRow("missing_answer", f"no gold answer in field {f['answer']!r}")
        answer = str(row[f["answer"]])
        if not math_gold_readable(answer):
            raise BadRow("unparsable_answer", f"gold answer {answer[:80]!r} cannot be read by the math grader")
        return {"answer": answer}
    gold: dict[str, Any] = {}
    if "tests" in f and row.get(f["tests"]):
        gold["tests"] = list(row[f["tests"]])
        if row.get(f.get("setup", "")):
            gold["setup"] = row[f["setup"]]
    elif "test" in f and row.get(f["test"]) and row.get(f.get("entry_point", "")):
        gold["test"], gold["entry_point"] = row[f["test"]], row[f["entry_point"]]
    elif "stdin" in f and row.get(f["stdin"]) is not None and row.get(f.get("expected_stdout", "")) is not None:
        stdin, expected = row[f["stdin"]], row[f["expected_stdout"]]
        if not isinstance(stdin, list) or not isinstance(expected, list) or len(stdin) != len(expected) or not stdin:
            raise BadRow("bad_tests", "stdin / expected_stdout must be non-empty lists of equal length")
        gold["stdin"], gold["expected_stdout"] = stdin, expected
    else:
        raise BadRow("no_tests", "a code task without tests cannot be scored")
    return gold


def math_gold_readable(answer: str) -> bool:
    """Whether math-verify finds something in the gold answer (what the math verifier will compare against)."""
    from rlpipe.verify.math import grade
    from rlpipe.verify.math_answer import gold_answer_span

    span = gold_answer_span(answer)
    outcome, _, _ = grade(span, span, 6, 15, True)
    return outcome != "gold_unparsed"


def load_examples(
    path: str | Path,
    format: str,
    *,
    fields: Optional[dict[str, str]] = None,
    on_bad_row: str = "error",
    quarantine: Optional[str | Path] = None,
    split: Optional[str] = None,
    prompt_length: Optional[Callable[[str], int]] = None,
    max_prompt_tokens: Optional[int] = None,
) -> tuple[list[Example], LoadReport]:
    """Every usable row of ``path`` as an Example (uid: the row's ``id``, ``task_id`` or ``unique_id`` field, else
    ``<file stem>:<row number>``).

    ``prompt_length(prompt text) -> tokens`` (the chat-templated length) enables the length check.
    """
    if format not in FORMATS:
        raise DataError(f"unknown data format {format!r}; valid: {', '.join(sorted(FORMATS))}")
    fmt = FORMATS[format]
    f = {**fmt.fields, **(fields or {})}

    def encode(row: dict[str, Any], uid: str) -> Example:
        prompt = fmt.prompt(row, f)
        gold = gold_fields(fmt, row, f)
        if prompt_length is not None and max_prompt_tokens is not None:
            tokens = prompt_length(prompt)
            if tokens > max_prompt_tokens:
                raise BadRow("prompt_too_long", f"prompt has {tokens} tokens > data.max_prompt_tokens="
                                                f"{max_prompt_tokens}")
        return Example(uid, prompt, gold)

    return load_encoded(path, encode, on_bad_row=on_bad_row, quarantine=quarantine, split=split,
                        id_fields=("id", "task_id", "unique_id"))


def load_encoded(path: str | Path, encode: Callable[[dict[str, Any], str], T], *, on_bad_row: str = "error",
                 quarantine: Optional[str | Path] = None, split: Optional[str] = None,
                 id_fields: tuple[str, ...] = ("id",)) -> tuple[list[T], LoadReport]:
    """``encode(row, uid)`` (an item with a ``uid``) of every row of ``path``; a ``BadRow`` is an error naming the file
    and row, or (``on_bad_row="skip"``) counted per reason and quarantined. Uids: the first of ``id_fields`` the row
    has, else ``<file stem>:<row>``, made unique (they key pass-rate tables and the sample ledger, and a step never
    holds one row twice)."""
    if on_bad_row not in ON_BAD_ROW:
        raise DataError(f"data.on_bad_row must be one of {ON_BAD_ROW}, got {on_bad_row!r}")
    report = LoadReport(str(path))
    items, bad, seen = [], [], set()
    stem = Path(path).name.split(".")[0]
    for n, row in read_rows(path, split):
        report.rows += 1
        try:
            if isinstance(row, BadRow):
                raise row
            if not isinstance(row, dict):
                raise BadRow("not_an_object", f"row {n} is a {type(row).__name__}, not an object")
            uid = str(next((row[k] for k in id_fields if k in row), f"{stem}:{n}"))
            item = encode(row, uid if uid not in seen else f"{stem}:{n}")
        except BadRow as e:
            if on_bad_row == "error":
                raise DataError(f"{path}, row {n}: {e} (data.on_bad_row=skip skips such rows and counts them)") from None
            report.skipped[e.reason] += 1
            bad.append({"row": n, "reason": e.reason, "message": str(e),
                        "data": row if isinstance(row, dict) else repr(row)[:500]})
            continue
        seen.add(item.uid)
        items.append(item)
    report.kept = len(items)
    write_quarantine(bad, quarantine)
    if report.skipped:
        log.warning("data %s (quarantined to %s)", report.summary(), quarantine)
    else:
        log.info("data %s", report.summary())
    if not items:
        raise DataError(f"no usable rows: {report.summary()}")
    return items, report


def write_quarantine(bad: list[dict[str, Any]], quarantine: Optional[str | Path]) -> None:
    """Append skipped rows (row number, reason, message, the row itself) to the quarantine file."""
    if not bad or quarantine is None:
        return
    q = Path(quarantine)
    q.parent.mkdir(parents=True, exist_ok=True)
    with open(q, "a", encoding="utf-8") as out:
        for b in bad:
            out.write(json.dumps(b, default=str) + "\n")
