"""Atomic checkpoints: written to a temporary directory, completed by a manifest, then renamed into place.

Layout under the checkpoint root:

    step_000040/            one complete checkpoint
        learner/            torch.distributed.checkpoint shards of policy, reference and optimizer (every rank)
        driver.pt           step, prompt-source cursor, reset history, RNG states
        manifest.json       written last: step, config hash, world size, size + sha256 of every file
    latest                  the name of the newest complete checkpoint (replaced atomically)
    .tmp-step_000050-<pid>/ a checkpoint being written (never read; removed on the next save)

A checkpoint is valid only if its manifest exists and every file matches its recorded size and checksum, so a
process killed at any point of a write leaves either the previous state or the new one, never a half state; a
truncated or corrupted file sends ``latest_valid`` back to the previous checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class CheckpointManager:
    def __init__(self, root: str | Path, keep_last: int = 2):
        self.root = Path(root)
        self.keep_last = max(1, keep_last)

    def save(self, step: int, write: Callable[[Path], None], *, config_hash: str, world_size: int) -> Path:
        """``write(tmp_dir)`` fills a fresh temporary directory; then manifest, rename, ``latest``, pruning."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".tmp-*"):  # left by a killed writer
            shutil.rmtree(stale, ignore_errors=True)
        name = f"step_{step:06d}"
        tmp = self.root / f".tmp-{name}-{os.getpid()}"
        tmp.mkdir()
        write(tmp)
        files = {str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {"step": step, "config_hash": config_hash, "world_size": world_size, "files": files}
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        final = self.root / name
        if final.exists():  # a re-save of the same step (e.g. after a resume): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        pointer = self.root / f".latest-{os.getpid()}"
        pointer.write_text(name + "\n")
        os.replace(pointer, self.root / "latest")
        self._prune()
        return final

    def _complete(self) -> list[Path]:
        return sorted(p for p in self.root.glob("step_*") if (p / MANIFEST).exists())

    def _prune(self) -> None:
        for old in self._complete()[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def verify(path: Path) -> Optional[str]:
        """None if the checkpoint is complete and intact, else what is wrong with it."""
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            return f"no readable manifest ({e})"
        for rel, info in manifest["files"].items():
            f = path / rel
            if not f.is_file():
                return f"missing {rel}"
            if f.stat().st_size != info["bytes"]:
                return f"{rel} has {f.stat().st_size} bytes, manifest says {info['bytes']}"
            if _sha256(f) != info["sha256"]:
                return f"{rel} does not match its checksum"
        return None

    def latest_valid(self) -> Optional[Path]:
        """The newest checkpoint that verifies. Invalid ones are logged and skipped. (``latest`` is written for
        people and tools; it is not trusted here: a writer killed between the rename and the pointer update leaves
        it one checkpoint behind.)"""
        for path in reversed(self._complete()):
            problem = self.verify(path)
            if problem is None:
                return path
            log.warning("checkpoint %s is not usable (%s); trying an older one", path, problem)
        return None


def config_hash(resolved_config: dict) -> str:
    """Hash of the settings that must match for a resume (run-location fields excluded)."""
    relevant = {k: v for k, v in resolved_config.items() if k not in ("logger",)}
    trainer = dict(relevant.get("trainer", {}))
    for k in ("output_dir", "resume", "checkpoint_dir", "total_steps", "save_every_steps", "keep_checkpoints"):
        trainer.pop(k, None)
    relevant["trainer"] = trainer
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]
