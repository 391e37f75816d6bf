"""Pure RL math: functions of tensors and scalars only (no Ray, vLLM, DeepSpeed, torch.distributed or config).

Modules:
    advantages   — GRPO, Dr.GRPO, RLOO, REINFORCE++(-baseline), AGAPO estimators (registry ``ADVANTAGE_ESTIMATORS``)
    policy_loss  — PPO clip (clip-higher, dual clip), plain PG (AGAPO), GSPO (registry ``POLICY_LOSSES``)
    aggregation  — token mean (DAPO), sequence mean of token means (GRPO), token sum / constant (Dr.GRPO)
    kl           — k1/k2/k3 estimators; token- or sequence-level KL loss; KL in the reward
    entropy      — per-token entropy from logits
    shaping      — DAPO overlong penalty, zero-variance group filter, truncation mask
    offpolicy    — rollout corrections: truncated / masked importance sampling, AReaL's decoupled PPO
    preference   — DPO, IPO, SimPO, SimPER pair losses (registry ``PREFERENCE_LOSSES``)
    schedule     — the supervised / preference stages' warm-up + cosine learning rate

Shape letters: N = samples in the flat batch (prompts x samples per prompt), T = response tokens, V = vocabulary.
"""

from rlpipe.algos.advantages import ADVANTAGE_ESTIMATORS, compute_advantages, group_stats
from rlpipe.algos.aggregation import AGGREGATIONS, aggregate_loss
from rlpipe.algos.entropy import entropy_from_logits
from rlpipe.algos.kl import KL_ESTIMATORS, kl_estimate, kl_in_reward, kl_loss, sequence_kl
from rlpipe.algos.policy_loss import POLICY_LOSSES, compute_policy_loss
from rlpipe.algos.shaping import overlong_penalty, truncated_mask, zero_variance_group_mask

__all__ = [
    "ADVANTAGE_ESTIMATORS", "AGGREGATIONS", "POLICY_LOSSES", "aggregate_loss", "compute_advantages",
    "compute_policy_loss", "entropy_from_logits", "group_stats", "KL_ESTIMATORS", "kl_estimate", "kl_in_reward", "kl_loss",
    "sequence_kl",
    "overlong_penalty", "truncated_mask", "zero_variance_group_mask",
]
