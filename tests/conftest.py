"""Shared fixtures: environment for real components, the tiny offline model, the shared data folder."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 'micro' Qwen2 model + trained tokenizer (seconds to build, real architecture)."""
    from rlpipe.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("micro_model"), seed=0, size="micro")
