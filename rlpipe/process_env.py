"""Environment defaults every rlpipe command sets before torch, Ray or vLLM are imported (they read these at import
time). A value already in the environment wins."""

import os
import time

STARTED_AT = time.time()  # the command's start: start-up time and time/elapsed_s count from here

DEFAULTS = {
    "OMP_NUM_THREADS": "1",  # torch's default thread count on shared cores made steps 5-80x slower
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # the engine core runs inside the rollout actor's own process
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def set_process_defaults() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
