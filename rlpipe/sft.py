"""``rlpipe sft [hydra overrides]`` (also ``python -m rlpipe.sft``): supervised fine-tuning on the learner ranks.

    rlpipe sft                                      # the tiny model from random init on teacher traces
    rlpipe sft model.path=/models/qwen sft.train_file=chats.jsonl sft.lr=1e-5 data=gsm8k data.file=test.jsonl
    rlpipe sft learner=deepspeed sft.eval_accuracy=false

Rows in TRL's formats (``messages`` | ``prompt`` + ``completion`` | ``text``); see rlpipe/tasks/conversations.py and
docs/pipelines.md.
"""

from __future__ import annotations

from rlpipe.process_env import set_process_defaults

set_process_defaults()  # before torch / ray / vllm are imported

from rlpipe.config.compose import hydra_command  # noqa: E402


def sft(cfg, resolved_config: dict) -> None:
    from rlpipe.driver.supervised import run_sft

    run_sft(cfg, resolved_config=resolved_config)


main = hydra_command("rlpipe sft", sft)

if __name__ == "__main__":
    main()
