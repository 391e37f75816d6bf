"""``python -m rlpipe.train [hydra overrides]`` (also the ``rlpipe`` console script): one RL training run.

    python -m rlpipe.train                                   # the default job: tiny model, arithmetic, GRPO
    python -m rlpipe.train algorithm=dapo rollout.samples_per_prompt=16 trainer.total_steps=200
    python -m rlpipe.train cluster=local                     # everything in this process (debugging)
"""

from __future__ import annotations

from rlpipe.process_env import set_process_defaults

set_process_defaults()  # before torch / ray / vllm are imported

import logging  # noqa: E402
import sys  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from rlpipe.config.schema import Config, register_configs  # noqa: E402

log = logging.getLogger("rlpipe")
register_configs()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(dcfg: DictConfig) -> None:
    from rlpipe.config.validate import validated_or_exit

    cfg: Config = validated_or_exit(OmegaConf.to_object(dcfg), "rlpipe")  # typed dataclasses from here on
    from rlpipe.driver.run import RunAborted, run

    try:
        run(cfg, resolved_config=OmegaConf.to_container(dcfg, resolve=True))
    except RunAborted as e:
        print(f"rlpipe: run aborted: {e}", file=sys.stderr, flush=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
