"""``rlpipe <command> [args]``: one command with subcommands, as users know from ``trl sft|dpo|grpo``.
Each subcommand is also ``python -m rlpipe.<command>``."""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

# name -> (module, one line of help). Hydra commands take config overrides; `score` has its own flags.
COMMANDS = {
    "train": ("rlpipe.train", "an RL training run (GRPO, DAPO, AGAPO, ...): rlpipe train algorithm=dapo"),
    "sft": ("rlpipe.sft", "supervised fine-tuning on the learner ranks: rlpipe sft sft.train_file=chats.jsonl"),
    "prefer": ("rlpipe.prefer", "preference optimisation (DPO, IPO, SimPO, SimPER), file or online pairs"),
    "pipeline": ("rlpipe.pipeline", "stages chained (sft, rl, prefer), each from the last one's model"),
    "eval": ("rlpipe.eval", "test-time scaling of a model: pass@k, maj@k, best-of-N, accuracy by budget"),
    "score": ("rlpipe.score", "score a file of completions with the training verifiers (--help for its flags)"),
    "filter": ("rlpipe.filter", "offline difficulty pre-pass: a pass-rate table for data.pass_rate_table"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: rlpipe <command> [args]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Hydra commands (all but score) take config overrides (key=value) and --help lists every",
              "config group and field; `rlpipe train --config-dir DIR --config-name NAME` runs an example's config."]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"rlpipe: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    if name == "score":
        return module.main(rest)
    sys.argv = [f"rlpipe {name}", *rest]  # Hydra reads the command line itself
    module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
