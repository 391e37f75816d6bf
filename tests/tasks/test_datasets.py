"""Data set files: every supported container, the standard formats on the real files, and every kind of bad row —
an error naming the row, or (on_bad_row=skip) a count per reason and a quarantine file. Nothing bad gets through."""

import gzip
import json
from pathlib import Path

import pytest

from conftest import DATA, needs_data
from rlpipe.tasks.datasets import DataError, load_examples

GOOD = [{"question": f"What is {i} + 1?", "answer": f"It is {i + 1}.\n#### {i + 1}"} for i in range(4)]


def _write_jsonl(path: Path, lines: list) -> Path:
    with open(path, "wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else (json.dumps(line) + "\n").encode())
    return path


def test_bad_rows_are_skipped_counted_and_quarantined(tmp_path):
    path = _write_jsonl(tmp_path / "mixed.jsonl", GOOD + [
        b"{not json\n",
        b'{"question": "caf\xe9", "answer": "#### 1"}\n',  # Latin-1 bytes: not UTF-8
        ["a", "list"],
        {"answer": "#### 3"},
        {"question": "   ", "answer": "#### 3"},
        {"question": "What?"},
        {"question": "What?", "answer": " "},
        {"question": "x " * 400, "answer": "#### 1"},
    ])
    quarantine = tmp_path / "q.jsonl"
    examples, report = load_examples(path, "gsm8k", on_bad_row="skip", quarantine=quarantine,
                                     prompt_length=lambda text: len(text.split()), max_prompt_tokens=100)
    assert [e.gold["answer"].split("#### ")[1] for e in examples] == ["1", "2", "3", "4"]
    assert report.rows == 12 and report.kept == 4
    assert dict(report.skipped) == {"malformed_json": 1, "undecodable": 1, "not_an_object": 1, "missing_field": 1,
                                    "empty_prompt": 1, "missing_answer": 1, "unparsable_answer": 1,
                                    "prompt_too_long": 1}
    quarantined = [json.loads(line) for line in quarantine.read_text().splitlines()]
    assert sorted(q["row"] for q in quarantined) == list(range(5, 13))


def test_a_bad_row_is_an_error_naming_it_by_default(tmp_path):
    path = _write_jsonl(tmp_path / "bad.jsonl", GOOD + [{"question": "What?"}])
    with pytest.raises(DataError, match=r"bad.jsonl, row 5: .*no gold answer"):
        load_examples(path, "gsm8k")


def test_code_tasks_without_tests_are_rejected(tmp_path):
    path = _write_jsonl(tmp_path / "code.jsonl", [
        {"text": "Write f.", "test_list": ["assert f(1) == 2"], "test_setup_code": ""},
        {"text": "Write g.", "test_list": []},
    ])
    examples, report = load_examples(path, "mbpp", on_bad_row="skip")
    assert len(examples) == 1 and examples[0].gold == {"tests": ["assert f(1) == 2"]}
    assert "assert f(1) == 2" in examples[0].prompt  # MBPP shows the first test: it names the function
    assert report.skipped == {"no_tests": 1}
    stdio = _write_jsonl(tmp_path / "stdio.jsonl", [{"question": "Echo.", "inputs": ["1"], "outputs": ["1", "2"]}])
    with pytest.raises(DataError, match="equal length"):
        load_examples(stdio, "stdio")


def test_parquet_gzip_json_and_saved_hf_datasets_load_alike(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(GOOD), tmp_path / "d.parquet")
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in GOOD)
    (tmp_path / "d.json").write_text(json.dumps(GOOD))
    datasets.DatasetDict({"test": datasets.Dataset.from_list(GOOD)}).save_to_disk(str(tmp_path / "hf"))
    expected = [("What is 0 + 1?", "1"), ("What is 1 + 1?", "2"), ("What is 2 + 1?", "3"), ("What is 3 + 1?", "4")]
    for path in ("d.parquet", "d.jsonl.gz", "d.json", "hf"):
        examples, _ = load_examples(tmp_path / path, "gsm8k")
        assert [(e.prompt.split("\n")[0], e.gold["answer"][-1]) for e in examples] == expected, path
    (tmp_path / "d.csv").write_text("question,answer\n")
    with pytest.raises(DataError, match="unknown data file type"):
        load_examples(tmp_path / "d.csv", "gsm8k")


def test_field_names_can_be_overridden(tmp_path):
    path = _write_jsonl(tmp_path / "own.jsonl", [{"q": "1+1?", "final": "2"}])
    examples, _ = load_examples(path, "math", fields={"prompt": "q", "answer": "final"})
    assert examples[0].gold == {"answer": "2"} and examples[0].prompt.startswith("1+1?")


@needs_data
@pytest.mark.parametrize("fmt,path,rows", [
    ("gsm8k", "gsm8k/test.jsonl", 1319), ("math", "math500/test.jsonl", 500), ("aime", "aime24/test.jsonl", 30),
    ("mbpp", "mbpp/mbpp.jsonl", 974), ("humaneval", "humaneval/HumanEval.jsonl.gz", 164),
])
def test_the_standard_data_sets_load_without_a_bad_row(fmt, path, rows):
    examples, report = load_examples(DATA / path, fmt)
    assert report.rows == rows and report.kept == rows and len({e.uid for e in examples}) == rows
