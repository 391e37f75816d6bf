"""The fields of the stages around RL (``rlpipe sft``, ``rlpipe prefer``, ``rlpipe pipeline``), with their defaults
and help texts; part of the root schema (``schema.Config``), kept apart so each file holds one idea."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rlpipe.config.section import Section, _help


@dataclass
class StageConfig(Section):
    """What every stage around RL (sft, prefer) has: its data files, its learning-rate schedule, its evaluations."""

    train_file: Optional[str] = _help("The stage's training data (.jsonl(.gz), .json, .parquet or a saved Hugging "
                                      "Face dataset; the formats: docs/pipelines.md).", None)
    heldout_file: Optional[str] = _help("Held-out rows, same format; default: heldout_rows rows split off the "
                                        "training data.", None)
    heldout_rows: int = _help("Held-out rows split off the training data when heldout_file is empty.", 256)
    total_steps: int = _help("Optimizer steps; file data is reshuffled every epoch.", 100)
    lr: float = _help("Peak AdamW learning rate (the learner's betas, weight decay and gradient clip apply).", 1e-4)
    warmup_ratio: float = _help("Linear warm-up over this fraction of total_steps, then cosine decay.", 0.05)
    min_lr_ratio: float = _help("The cosine decays to this fraction of lr (1 = constant after the warm-up).", 0.1)
    max_seq_tokens: int = _help("Rows longer than this (prompt + response tokens) are truncated.", 1024)
    eval_every_steps: int = _help("Held-out evaluation every this many steps, and before and after training.", 20)
    eval_accuracy: bool = _help("Evaluations include greedy held-out accuracy and mean response length on the data "
                                "section's held-out problems (data.task, data.file / data.heldout_file: rows with "
                                "gold answers), through the rollout engines and verifiers.", True)


@dataclass
class SFTConfig(StageConfig):
    train_file: Optional[str] = _help(
        "`rlpipe sft`'s data, rows in TRL's formats told apart per row: messages (every assistant turn trained) | "
        "prompt + completion (plain or conversational; the completion trained) | text. Empty: teacher traces of the "
        "arithmetic task (the default job's warm-start data), written to <output_dir>/teacher_traces.jsonl.", None)
    teacher_rows: int = _help("Teacher traces written when sft.train_file is empty (1,500 steps x 32 rows: every "
                              "row is seen once).", 48000)
    teacher_recheck_rate: float = _help(
        "Teacher traces: how often the teacher writes a step again ('Check: ...') before going on, so correct "
        "solutions of one problem differ in length (the concision stage's material; examples/exaone-pipeline). "
        "0 = the warm-start's teacher, unchanged.", 0.0)
    rows_per_step: int = _help("Rows (sequences) per optimizer step, global (TRL: per-device batch x devices x "
                               "gradient accumulation).", 32)
    total_steps: int = _help("Optimizer steps; the data is reshuffled every epoch.", 1500)
    lr: float = _help("Peak AdamW learning rate (3e-3 suits the tiny model; real checkpoints want ~1e-5).", 3e-3)
    eval_every_steps: int = _help("Held-out loss (and accuracy, with sft.eval_accuracy) every this many steps, and "
                                  "before and after training.", 250)


@dataclass
class PreferConfig(StageConfig):
    train_file: Optional[str] = _help(
        "`rlpipe prefer`'s pairs in TRL's preference format (prompt, chosen, rejected; plain or conversational). "
        "Empty: pairs built online every step from prefer.samples_per_prompt responses per prompt of the data "
        "section, scored by the verifiers (prefer.rejected says which response is rejected).", None)
    loss: str = _help("dpo (sigmoid, frozen reference) | ipo | simpo | simper (reference-free, EXAONE 4.0's).", "dpo")
    beta: float = _help("β: DPO / IPO's KL strength, SimPO's reward scale (its paper: 2.0). SimPER has none.", 0.1)
    label_smoothing: float = _help("DPO's conservative label smoothing ε (cDPO).", 0.0)
    simpo_gamma: float = _help("SimPO's target margin γ.", 1.0)
    pairs_per_step: int = _help("File pairs per optimizer step, global.", 32)
    prompts_per_step: int = _help("Online: prompts per step (each gives at most one pair), global.", 32)
    samples_per_prompt: int = _help("Online: responses sampled per prompt (EXAONE 4.0: 4-16), at "
                                    "rollout.temperature.", 8)
    rejected: str = _help("Online: which response is rejected against the shortest correct one: wrong (a wrong one) "
                          "| longer (a correct one at least prefer.min_length_ratio times longer: concision) | "
                          "wrong_or_longer (a wrong one if any, else a longer correct one).", "wrong_or_longer")
    min_length_ratio: float = _help("Online, rule longer: how much longer the rejected correct response must be.",
                                    1.5)
    lr: float = _help("Peak AdamW learning rate (the tiny model; DPO on real checkpoints uses ~5e-7).", 1e-4)
    min_lr_ratio: float = _help("The cosine decays to this fraction of lr (1 = constant after the warm-up).", 1.0)


@dataclass
class PipelineConfig(Section):
    stages: list[str] = _help(
        "`rlpipe pipeline`: stages in order, each starting from the model the one before exported: sft | rl | "
        "prefer (a name may repeat). Stage k runs in <trainer.output_dir>/<k>-<name> with its own checkpoints; a "
        "rerun skips finished stages and resumes the unfinished one (docs/pipelines.md).",
        default_factory=lambda: ["sft", "rl"])
