"""Atomic checkpoint writes: a writer killed at any phase leaves a resumable state; damage is detected."""

import json
import os

import pytest

from rlpipe.driver.checkpoint import CheckpointManager


def _write(payload: bytes):
    def write(tmp):
        (tmp / "learner").mkdir()
        (tmp / "learner" / "shard0.bin").write_bytes(payload)
        (tmp / "driver.pt").write_bytes(b"state-" + payload)
    return write


def test_save_prune_and_latest(tmp_path):
    m = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        m.save(step, _write(bytes([step]) * 100), config_hash="h", world_size=2)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_000002", "step_000003"]
    assert (tmp_path / "latest").read_text().strip() == "step_000003"
    assert m.latest_valid() == tmp_path / "step_000003"
    manifest = json.loads((tmp_path / "step_000003" / "manifest.json").read_text())
    assert manifest["step"] == 3 and manifest["world_size"] == 2 and "learner/shard0.bin" in manifest["files"]


def test_killed_before_the_manifest_leaves_the_previous_checkpoint(tmp_path):
    m = CheckpointManager(tmp_path)
    m.save(1, _write(b"a" * 50), config_hash="h", world_size=1)

    def dies_midway(tmp):
        _write(b"b" * 50)(tmp)
        raise KeyboardInterrupt  # the process dies before the manifest exists

    with pytest.raises(KeyboardInterrupt):
        m.save(2, dies_midway, config_hash="h", world_size=1)
    assert m.latest_valid() == tmp_path / "step_000001"
    m.save(3, _write(b"c" * 50), config_hash="h", world_size=1)
    assert not list(tmp_path.glob(".tmp-*"))  # the dead writer's directory is cleaned up by the next save


def test_killed_after_the_manifest_before_the_rename(tmp_path):
    m = CheckpointManager(tmp_path)
    m.save(1, _write(b"a" * 50), config_hash="h", world_size=1)
    done = m.save(2, _write(b"b" * 50), config_hash="h", world_size=1)
    os.rename(done, tmp_path / ".tmp-step_000002-999")  # as if the rename had not happened yet
    (tmp_path / "latest").write_text("step_000001\n")
    assert m.latest_valid() == tmp_path / "step_000001"


def test_killed_after_the_rename_before_the_pointer_update(tmp_path):
    m = CheckpointManager(tmp_path)
    m.save(1, _write(b"a" * 50), config_hash="h", world_size=1)
    m.save(2, _write(b"b" * 50), config_hash="h", world_size=1)
    (tmp_path / "latest").write_text("step_000001\n")  # pointer not yet updated
    assert m.latest_valid() == tmp_path / "step_000002"  # the complete newer checkpoint is used


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, damage):
    m = CheckpointManager(tmp_path)
    m.save(1, _write(b"a" * 50), config_hash="h", world_size=1)
    newest = m.save(2, _write(b"b" * 50), config_hash="h", world_size=1)
    shard = newest / "learner" / "shard0.bin"
    if damage == "truncate":
        shard.write_bytes(b"b" * 10)
    elif damage == "flip":
        shard.write_bytes(b"b" * 49 + b"x")
    else:
        shard.unlink()
    assert CheckpointManager.verify(newest) is not None
    assert m.latest_valid() == tmp_path / "step_000001"
