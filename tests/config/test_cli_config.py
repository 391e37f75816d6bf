"""Configuration errors stop `python -m rlpipe.train` before Ray or any actor starts, naming the problem."""

import subprocess
import sys
import time

from conftest import REPO


def _train(*overrides, **kw):
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "rlpipe.train", *overrides], cwd=REPO, capture_output=True,
                          text=True, timeout=120, **kw)
    return proc, time.time() - start


def test_misspelt_override_fails_naming_the_key(tmp_path):
    proc, seconds = _train("trainer.total_stepz=3", f"trainer.output_dir={tmp_path}/run")
    assert proc.returncode != 0
    assert "total_stepz" in proc.stderr
    assert "Ray" not in proc.stdout + proc.stderr  # nothing was started
    assert not (tmp_path / "run").exists()


def test_misspelt_key_in_a_yaml_preset_fails_naming_it(tmp_path):
    (tmp_path / "algorithm").mkdir()
    (tmp_path / "algorithm" / "mine.yaml").write_text("advantage: grpo\nclip_hihg: 0.3\n")
    proc, _ = _train("--config-dir", str(tmp_path), "algorithm=mine", f"trainer.output_dir={tmp_path}/run")
    assert proc.returncode != 0
    assert "clip_hihg" in proc.stderr


def test_invalid_value_fails_validation_naming_the_field(tmp_path):
    proc, _ = _train("rollout.engine=vlm", "algorithm.advantage=gpro", f"trainer.output_dir={tmp_path}/run")
    assert proc.returncode == 2
    assert "rollout.engine='vlm'" in proc.stderr and "algorithm.advantage='gpro'" in proc.stderr
    assert "Ray" not in proc.stdout + proc.stderr
