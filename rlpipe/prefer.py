"""``rlpipe prefer [hydra overrides]`` (also ``python -m rlpipe.prefer``): preference optimisation on the learner ranks.

    rlpipe prefer model.path=RUN/final_model                        # online DPO: pairs from the policy's own
                                                                    # scored rollouts (shortest correct vs wrong)
    rlpipe prefer model.path=M prefer.train_file=pairs.jsonl        # DPO on TRL-format pairs
    rlpipe prefer model.path=M prefer.loss=simper prefer.rejected=longer   # EXAONE 4.0's concision round

Losses: rlpipe/algos/preference.py; the stage: rlpipe/driver/preference.py; docs/pipelines.md.
"""

from __future__ import annotations

from rlpipe.process_env import set_process_defaults

set_process_defaults()  # before torch / ray / vllm are imported

from rlpipe.config.compose import hydra_command  # noqa: E402


def prefer(cfg, resolved_config: dict) -> None:
    from rlpipe.driver.preference import run_prefer

    run_prefer(cfg, resolved_config=resolved_config)


def checks(cfg) -> list[str]:
    if cfg.learner.micro_batch_samples < 2:
        return ["learner.micro_batch_samples must be >= 2 for rlpipe prefer: a pair's two responses share a "
                "micro-batch"]
    return []


main = hydra_command("rlpipe prefer", prefer, extra_checks=checks)

if __name__ == "__main__":
    main()
