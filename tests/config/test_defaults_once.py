"""Defaults live once, in the schema: presets hold only what differs from it, and the settings the builders pass to
roles carry no defaults of their own (so a default can never drift between two places)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import rlpipe
from rlpipe.config.compose import load_config
from rlpipe.config.schema import Config

CONF = Path(rlpipe.__file__).parent / "conf"
PRESETS = sorted(CONF.glob("*/*.yaml"))


# Values a preset repeats on purpose: cluster=local must pin one of each role over what a data= preset's verifier
# asked for (the cluster group is composed after the verifier group).
PINNED = {"cluster/local": {"rollout.num_engines", "verifier.num_workers"}}


def _leaves(node, prefix=()):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_preset_sets_only_values_that_differ_from_the_schema(preset):
    schema = OmegaConf.to_container(OmegaConf.structured(Config))
    text = preset.read_text()
    data = OmegaConf.to_container(OmegaConf.load(preset)) or {}
    base = schema if "@package _global_" in text else schema[preset.parent.name]
    same = []
    for path, value in _leaves({k: v for k, v in data.items() if k != "defaults"}):
        node = base
        for key in path:
            node = node[key]  # a key the schema lacks would fail composition (tested below)
        if node == value and value != "???" and ".".join(path) not in PINNED.get(
                f"{preset.parent.name}/{preset.stem}", ()):
            same.append(".".join(path))
    assert not same, f"{preset.name} repeats schema defaults: {same}"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_preset_composes_and_validates(preset, tmp_path, micro_model_dir):
    overrides = [f"{preset.parent.name}={preset.stem}", f"model.path={micro_model_dir}"]
    # A math or code verifier scores data files of its kind (the arithmetic task is refused, naming the field).
    overrides += {"verifier/math": ["data=gsm8k"], "verifier/code": ["data=mbpp"]}.get(
        f"{preset.parent.name}/{preset.stem}", [])
    if "file: ???" in preset.read_text() or len(overrides) > 2:
        data_file = tmp_path / "rows.jsonl"
        data_file.write_text("")
        overrides.append(f"data.file={data_file}")
    cfg = load_config(overrides)
    assert cfg is not None


SETTINGS = [
    "rlpipe.learner.objective:ObjectiveSettings", "rlpipe.learner.rank:OptimizerSettings",
    "rlpipe.learner.score_head:ScoreHeadSettings", "rlpipe.rollout.types:SamplingSettings",
    "rlpipe.driver.collect:CollectSettings", "rlpipe.driver.trainer:StepSettings",
    "rlpipe.learner.rank:CorrectionSettings", "rlpipe.learner.lora:LoraSettings",
    "rlpipe.learner.dense_head:DenseHeadSettings",
]


@pytest.mark.parametrize("name", SETTINGS)
def test_settings_passed_to_roles_carry_no_defaults(name):
    from rlpipe.registry import import_object

    with_default = [f.name for f in dataclasses.fields(import_object(name))
                    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
    assert not with_default, f"{name} has defaults of its own: {with_default} (the schema holds them)"


def test_the_config_is_frozen_after_validation():
    cfg = load_config([])
    with pytest.raises(AttributeError, match="frozen"):
        cfg.algorithm.kl_coef = 0.0
    with pytest.raises(AttributeError, match="frozen"):
        cfg.learner.deepspeed.zero_stage = 3


def test_schema_fields_are_read_somewhere():
    """No field nothing reads (``cluster.num_cpus`` was one): every leaf name appears in rlpipe's code outside the
    schema, or in a preset."""
    root = Path(rlpipe.__file__).parent
    code = "\n".join(p.read_text() for p in root.rglob("*.py") if not p.name.startswith("schema"))
    schema = OmegaConf.to_container(OmegaConf.structured(Config))
    unread = [".".join(path) for path, _ in _leaves(schema) if f".{path[-1]}" not in code]
    assert not unread, f"fields nothing reads: {unread}"
