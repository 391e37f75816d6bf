"""``rlpipe train [hydra overrides]`` (also ``python -m rlpipe.train``): one RL training run.

    rlpipe train                                   # the default job: tiny model, arithmetic, GRPO
    rlpipe train algorithm=dapo rollout.samples_per_prompt=16 trainer.total_steps=200
    rlpipe train cluster=local                     # everything in this process (debugging)
    rlpipe train --config-dir examples/dapo-math --config-name dapo_math   # an example's config
"""

from __future__ import annotations

from rlpipe.process_env import set_process_defaults

set_process_defaults()  # before torch / ray / vllm are imported

from rlpipe.config.compose import hydra_command  # noqa: E402


def train(cfg, resolved_config: dict) -> None:
    from rlpipe.driver.run import run

    run(cfg, resolved_config=resolved_config)


main = hydra_command("rlpipe train", train)

if __name__ == "__main__":
    main()
