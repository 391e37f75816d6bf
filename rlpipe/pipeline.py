"""``rlpipe pipeline [hydra overrides]`` (also ``python -m rlpipe.pipeline``): stages chained, each starting from the
model the one before exported (rlpipe/driver/pipeline.py, docs/pipelines.md).

    rlpipe pipeline 'pipeline.stages=[sft,prefer]'               # Phi-4-mini-flash-reasoning: SFT then DPO, no RL
    rlpipe pipeline 'pipeline.stages=[sft,rl,prefer]' algorithm=agapo prefer.loss=simper prefer.rejected=longer
    rlpipe pipeline --config-dir examples/phi4-sft-dpo --config-name phi4_sft_dpo
"""

from __future__ import annotations

from rlpipe.process_env import set_process_defaults

set_process_defaults()  # before torch / ray / vllm are imported

from rlpipe.config.compose import hydra_command  # noqa: E402
from rlpipe.prefer import checks as prefer_checks  # noqa: E402


def pipeline(cfg, resolved_config: dict) -> None:
    from rlpipe.driver.pipeline import run_pipeline

    run_pipeline(cfg, resolved_config)


def checks(cfg) -> list[str]:
    return prefer_checks(cfg) if "prefer" in cfg.pipeline.stages else []


main = hydra_command("rlpipe pipeline", pipeline, extra_checks=checks)

if __name__ == "__main__":
    main()
