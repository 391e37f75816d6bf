"""``python -m rlpipe.train [hydra overrides]`` (also the ``rlpipe`` console script): one RL training run.

    python -m rlpipe.train                                   # the default job: tiny model, arithmetic, GRPO
    python -m rlpipe.train algorithm=dapo rollout.samples_per_prompt=16 trainer.total_steps=200
    python -m rlpipe.train cluster=local                     # everything in this process (debugging)
"""

from __future__ import annotations

import os

# Set before torch / ray / vllm are imported: thread counts and offline mode are read at import time.
for _k, _v in {
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(_k, _v)

import logging  # noqa: E402
import sys  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from rlpipe.config.schema import Config, register_configs  # noqa: E402

log = logging.getLogger("rlpipe")
register_configs()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(dcfg: DictConfig) -> None:
    cfg: Config = OmegaConf.to_object(dcfg)  # typed dataclasses from here on
    from rlpipe.config.validate import ConfigError, validate

    try:
        validate(cfg)
    except ConfigError as e:
        print(f"rlpipe: {e}", file=sys.stderr)
        sys.exit(2)
    from rlpipe.driver.run import RunAborted, run

    try:
        run(cfg, resolved_config=OmegaConf.to_container(dcfg, resolve=True))
    except RunAborted as e:
        print(f"rlpipe: run aborted: {e}", file=sys.stderr, flush=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
