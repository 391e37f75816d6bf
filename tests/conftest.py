"""Shared fixtures: environment for real components, the tiny offline model, the shared data folder."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

for _k, _v in {
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "WANDB_MODE": "offline",
    "GLOO_SOCKET_IFNAME": "lo",
    "DS_ACCELERATOR": "cpu",
}.items():
    os.environ.setdefault(_k, _v)

REPO = Path(__file__).resolve().parents[1]
# The shared public data sets beside the checkout (../shared/data); tests that read them skip when it is absent.
DATA = REPO.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} (the shared public data sets) is absent")


def _have_bwrap() -> bool:
    from rlpipe.verify.sandbox import SandboxUnavailable, find_bwrap

    try:
        find_bwrap()
        return True
    except SandboxUnavailable:
        return False


HAVE_BWRAP = _have_bwrap()
needs_bwrap = pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap >= 0.8 is not installed")


def free_port() -> int:
    """A free TCP port on loopback, outside Ray's worker port range (10002-19999: Ray refuses its own ports there,
    and a torch.distributed rendezvous there could collide with a Ray worker)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 10002 <= port <= 19999:
            return port


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 'micro' Qwen2 model + trained tokenizer (seconds to build, real architecture)."""
    from rlpipe.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("micro_model"), seed=0, size="micro")


@pytest.fixture(scope="session")
def default_model() -> Path:
    """The default job's warm-started tiny model, built (or found in the cache) once, before any test that starts
    `python -m rlpipe.train` with a deadline: on a fresh machine the warm-start takes minutes."""
    from rlpipe.config.schema import Config
    from rlpipe.driver.build import model_dir

    return Path(model_dir(Config()))


# data=tool_arithmetic on a micro model briefly taught the tool-call format (about half its rollouts call the
# calculator): multi-turn rollouts in seconds, for the token-exactness, resume and fault tests.
TOOL_MICRO = ["data=tool_arithmetic", "model.tiny.size=micro", "model.tiny.warmstart_steps=150",
              "model.tiny.warmstart_lr=5e-3", "model.tiny.teacher_tool_rate=0.5"]


@pytest.fixture(scope="session")
def tool_micro_model() -> Path:
    """The warm-start ``TOOL_MICRO`` selects, built (or found in the cache) once: the runs these tests start as
    subprocesses with ``TOOL_MICRO`` find it there."""
    from rlpipe.config.compose import load_config
    from rlpipe.driver.build import model_dir

    return Path(model_dir(load_config(TOOL_MICRO)))
