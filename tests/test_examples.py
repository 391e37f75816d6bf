"""examples/: each folder has a README naming its exact command and its config; every config composes and
validates; those that fit two CPU cores run one or two steps (their README's command, shrunk by overrides)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA, HAVE_BWRAP, REPO, TOOL_MICRO

EXAMPLES = sorted(p for p in (REPO / "examples").iterdir() if p.is_dir())
SHRINK = ["trainer.total_steps=2", "trainer.eval_every_steps=1", "data.heldout_size=8", "data.prompts_per_step=4",
          "rollout.samples_per_prompt=4", "logger.progress_bar=false"]


def _config(example: Path) -> Path:
    [config] = list(example.glob("*.yaml"))
    return config


def test_there_are_at_least_six_examples():
    assert len(EXAMPLES) >= 6, [e.name for e in EXAMPLES]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_readme_names_the_command_and_its_config(example):
    text = (example / "README.md").read_text()
    config = _config(example)
    assert f"--config-dir examples/{example.name} --config-name {config.stem}" in text, \
        f"{example.name}/README.md must give the exact command with its config"
    assert config.name in text


def _stand_ins(example: Path, tmp_path: Path, micro_model_dir: Path) -> list[str]:
    """Values an example leaves to the user (model.path=???, data files), as test stand-ins."""
    text = _config(example).read_text()
    overrides = []
    if "path: ???" in text:
        overrides.append(f"model.path={micro_model_dir}")
    if re.search(r"override data: (gsm8k|math500|mbpp)", text):
        kind = re.search(r"override data: (\w+)", text)[1]
        rows = tmp_path / f"{kind}.jsonl"
        row = {"gsm8k": {"question": "1+1?", "answer": "#### 2"}, "math500": {"problem": "1+1?", "answer": "2"},
               "mbpp": {"text": "Return 1.", "test_list": ["assert f() == 1"], "test_setup_code": ""}}[kind]
        rows.write_text("".join(json.dumps(row) + "\n" for _ in range(16)))
        overrides.append(f"data.file={rows}")
    return overrides


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_config_composes_and_validates(example, tmp_path, micro_model_dir):
    from rlpipe.config.compose import load_config

    cfg = load_config(_stand_ins(example, tmp_path, micro_model_dir), config_dir=example,
                      config_name=_config(example).stem)
    assert cfg.trainer.total_steps >= 1


# Examples that fit two CPU cores, with what a CI run adds: data from the shared data sets, a smaller model.
RUNNABLE = {
    "laptop-default": [],
    "agapo-exaone": [],
    "prorl-resets": ["algorithm.reference_reset.interval_steps=1"],
    "dapo-math": ["data.file={DATA}/math500/test.jsonl", "data.on_bad_row=skip", "trainer.total_steps=1",
                  "rollout.max_response_tokens=32", "algorithm.overlong_buffer_tokens=8"],
    "code-mbpp-sandbox": ["data.file={DATA}/mbpp/mbpp.jsonl", "trainer.total_steps=1", "rollout.max_response_tokens=48",
                          "data.max_prompt_tokens=256", "data.on_bad_row=skip"],  # the tiny model has 512 positions
    "score-head-best-of-n": ["cluster=local", "rollout=hf"],
    "tool-calculator": [o for o in TOOL_MICRO if not o.startswith("data=")],  # the micro tool model, in seconds
}


@pytest.mark.slow
@pytest.mark.usefixtures("default_model")
@pytest.mark.parametrize("name", sorted(RUNNABLE))
def test_example_runs_a_step_or_two(name, tmp_path):
    example = REPO / "examples" / name
    extra = [o.format(DATA=DATA) for o in RUNNABLE[name]]
    if any("{DATA}" in o for o in RUNNABLE[name]) and not DATA.is_dir():
        pytest.skip(f"{DATA} (the shared public data sets) is absent")
    if name == "code-mbpp-sandbox" and not HAVE_BWRAP:
        pytest.skip("bubblewrap >= 0.8 is not installed")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlpipe", "train", "--config-dir", f"examples/{name}", "--config-name",
           _config(example).stem, *SHRINK, *extra, f"trainer.output_dir={run}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == (1 if "trainer.total_steps=1" in extra else 2)
    if name == "prorl-resets":
        events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
        assert [e["event"] for e in events] == ["reference_reset"] * 2
    if name == "score-head-best-of-n":
        out = tmp_path / "eval"
        ev = subprocess.run([sys.executable, "-m", "rlpipe", "eval", "--config-dir", f"examples/{name}",
                             "--config-name", "score_head", f"model.path={run / 'final_model'}", "cluster=local",
                             "rollout=hf", "data.heldout_size=8", "eval.samples_per_prompt=4", "eval.best_of=[2,4]",
                             "eval.maj_k=[4]", "eval.pass_k=[1]", f"eval.output_dir={out}",
                             f"trainer.output_dir={tmp_path / 'eval_run'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
        assert ev.returncode == 0, ev.stdout[-2000:] + ev.stderr[-3000:]
        result = json.loads((out / "eval.json").read_text())
        assert set(result["best_of_n_by_head"]) == {"2", "4"}


# Pipeline examples: `rlpipe pipeline` with every stage shrunk to two steps.
PIPELINES = {"phi4-sft-dpo": ["1-sft", "2-prefer"], "exaone-pipeline": ["1-sft", "2-rl", "3-prefer"]}
PIPELINE_SHRINK = ["sft.total_steps=2", "sft.teacher_rows=300", "sft.eval_every_steps=2", "prefer.total_steps=2",
                   "prefer.eval_every_steps=2", "prefer.prompts_per_step=4", "prefer.samples_per_prompt=4",
                   "trainer.total_steps=2", "trainer.eval_every_steps=2", "data.heldout_size=8",
                   "data.prompts_per_step=4", "rollout.samples_per_prompt=4", "logger.progress_bar=false"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_pipeline_example_runs_every_stage(name, tmp_path):
    example = REPO / "examples" / name
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlpipe", "pipeline", "--config-dir", f"examples/{name}", "--config-name",
           _config(example).stem, *PIPELINE_SHRINK, f"trainer.output_dir={run}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    stages = json.loads((run / "pipeline.json").read_text())["stages"]
    assert [s["stage"] for s in stages] == PIPELINES[name]
    assert all(s["steps"] == 2 and s["accuracy_after"] is not None for s in stages)
