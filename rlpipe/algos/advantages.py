"""Outcome-reward advantage estimators. One scalar advantage per response, broadcast over its tokens by the loss.

All take ``rewards [N]`` and ``group_index [N]`` (the prompt group of each sample; groups may differ in size, e.g.
after dynamic sampling or dropped samples) and return ``advantages [N]``.
"""

from __future__ import annotations

import torch

from rlpipe.registry import Registry

ADVANTAGE_ESTIMATORS: Registry = Registry("advantage estimator")


def group_stats(values: torch.Tensor, group_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample mean, unbiased std and size of the sample's group.

    Args:
        values: [N] float. group_index: [N] long, any non-negative ids.
    Returns:
        (mean [N], std [N], size [N]); std is 0 for groups of one.
    """
    _, inverse = torch.unique(group_index, return_inverse=True)
    num_groups = int(inverse.max()) + 1 if len(inverse) else 0
    v = values.double()
    size = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, inverse, torch.ones_like(v))
    total = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, inverse, v)
    mean = total / size
    sq_dev = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, inverse, (v - mean[inverse]) ** 2)
    std = torch.where(size > 1, (sq_dev / (size - 1).clamp(min=1)).sqrt(), torch.zeros_like(size))
    dtype = values.dtype
    return mean[inverse].to(dtype), std[inverse].to(dtype), size[inverse].to(dtype)


def _whiten(x: torch.Tensor, eps: float) -> torch.Tensor:
    """(x − mean_batch) / (std_batch + eps) over the whole batch (unbiased std)."""
    if x.numel() < 2:
        return torch.zeros_like(x)
    return (x - x.mean()) / (x.std() + eps)


def _leave_one_out(rewards: torch.Tensor, group_index: torch.Tensor) -> torch.Tensor:
    """r_i − mean_{j≠i} r_j within the group; 0 for groups of one."""
    mean, _, size = group_stats(rewards, group_index)
    others_mean = (mean * size - rewards) / (size - 1).clamp(min=1)
    return torch.where(size > 1, rewards - others_mean, torch.zeros_like(rewards))


@ADVANTAGE_ESTIMATORS.register("grpo")
def grpo_advantages(rewards: torch.Tensor, group_index: torch.Tensor, *, eps: float = 1e-6, **_) -> torch.Tensor:
    """GRPO (DeepSeekMath, arXiv 2402.03300, eq. 3 outcome supervision): A_i = (r_i − mean_g) / (std_g + eps).

    std is the unbiased group std, as in verl and TRL; a group of one gets 0.
    """
    mean, std, size = group_stats(rewards, group_index)
    return torch.where(size > 1, (rewards - mean) / (std + eps), torch.zeros_like(rewards))


@ADVANTAGE_ESTIMATORS.register("dr_grpo")
def dr_grpo_advantages(rewards: torch.Tensor, group_index: torch.Tensor, **_) -> torch.Tensor:
    """Dr.GRPO (arXiv 2503.20783, eq. 5): A_i = r_i − mean_g, no std division (it biases towards easy/hard prompts)."""
    mean, _, _ = group_stats(rewards, group_index)
    return rewards - mean


@ADVANTAGE_ESTIMATORS.register("rloo")
def rloo_advantages(rewards: torch.Tensor, group_index: torch.Tensor, **_) -> torch.Tensor:
    """RLOO (arXiv 2402.14740, eq. 4): A_i = r_i − (1/(G−1)) Σ_{j≠i} r_j."""
    return _leave_one_out(rewards, group_index)


@ADVANTAGE_ESTIMATORS.register("reinforce_pp")
def reinforce_pp_advantages(rewards: torch.Tensor, group_index: torch.Tensor, *, eps: float = 1e-6, **_) -> torch.Tensor:
    """REINFORCE++ (arXiv 2501.03262), outcome reward: global batch whitening A = (r − mean_B) / std_B."""
    return _whiten(rewards, eps)


@ADVANTAGE_ESTIMATORS.register("reinforce_pp_baseline")
def reinforce_pp_baseline_advantages(
    rewards: torch.Tensor, group_index: torch.Tensor, *, eps: float = 1e-6, **_
) -> torch.Tensor:
    """REINFORCE++-baseline (arXiv 2501.03262 v3+): subtract the group mean, then whiten over the batch."""
    mean, _, _ = group_stats(rewards, group_index)
    return _whiten(rewards - mean, eps)


@ADVANTAGE_ESTIMATORS.register("agapo")
def agapo_advantages(
    rewards: torch.Tensor,
    group_index: torch.Tensor,
    *,
    eps: float = 1e-6,
    all_wrong_advantage: float = 0.0,
    correct_threshold: float = 0.5,
    **_,
) -> torch.Tensor:
    """AGAPO (EXAONE 4.0, arXiv 2507.11407, §2.3): A_loo,i = r_i − mean_{j≠i} r_j, then global whitening
    A_i = (A_loo,i − mean_B(A_loo)) / (std_B(A_loo) + eps).

    Groups where every response is wrong (reward < ``correct_threshold``) are kept. As written they get A_loo = 0,
    so they carry no policy-gradient signal; ``all_wrong_advantage`` = a > 0 sets their A_loo to −a before the global
    normalisation, pushing probability away from answers that were all wrong. Default 0 (the paper as written).
    """
    a_loo = _leave_one_out(rewards, group_index)
    if all_wrong_advantage:
        _, inverse = torch.unique(group_index, return_inverse=True)
        num_groups = int(inverse.max()) + 1
        any_correct = torch.zeros(num_groups, dtype=torch.bool).index_put_(
            (inverse,), rewards >= correct_threshold, accumulate=True)
        a_loo = torch.where(any_correct[inverse], a_loo, torch.full_like(a_loo, -all_wrong_advantage))
    return _whiten(a_loo, eps)


def compute_advantages(name: str, rewards: torch.Tensor, group_index: torch.Tensor, **options) -> torch.Tensor:
    """Look up ``name`` in ADVANTAGE_ESTIMATORS and apply it. Returns advantages [N]."""
    return ADVANTAGE_ESTIMATORS.get(name)(rewards, group_index, **options)
