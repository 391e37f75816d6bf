"""Length-aware rewards (Kimi k1.5 length penalty, ALP's adaptive length penalty, L1's LCPO budget rewards) and the
overthinking metric.

Shape letters as in ``rlpipe.algos``: N = samples in the flat batch, B = difficulty bins.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_floating_point() else x.to(torch.float32)


def group_length_penalty(
    lengths: torch.Tensor, correct: torch.Tensor, group_index: torch.Tensor, weight: float = 1.0
) -> torch.Tensor:
    """Kimi k1.5 length reward (arXiv 2501.12599, §2.3.3 "Length Penalty"), lengths [N] -> reward [N]:

        λ_i = 0.5 − (len_i − min_len) / (max_len − min_len)
        reward_i = weight · λ_i            if sample i is correct
                   weight · min(0, λ_i)    otherwise

    min_len and max_len are taken over all samples of the prompt's group, correct and incorrect alike, as in the
    paper; so a short wrong answer still sets min_len for its correct siblings. A group whose samples all have the
    same length gets 0 everywhere. Kimi switches the penalty on only after a warm-up without it: pass weight=0 then.

    Args:
        lengths: [N] response lengths (int or float). correct: [N] bool.
        group_index: [N] long prompt-group ids, any values, in any order.
    """
    x = _as_float(lengths)
    _, inverse = torch.unique(group_index, return_inverse=True)
    num_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    # include_self=False makes the fill value irrelevant: every group has at least one sample.
    empty = x.new_zeros(num_groups)
    lo = empty.scatter_reduce(0, inverse, x, "amin", include_self=False)[inverse]
    hi = empty.scatter_reduce(0, inverse, x, "amax", include_self=False)[inverse]
    span = hi - lo
    has_span = span > 0
    lam = 0.5 - (x - lo) / torch.where(has_span, span, torch.ones_like(span))
    lam = torch.where(has_span, lam, torch.zeros_like(lam))
    return weight * torch.where(correct.bool(), lam, lam.clamp(max=0.0))


LENGTH_PENALTIES = ("kimi", "alp")  # algorithm.length_penalty: group_length_penalty | adaptive_length_penalty


def adaptive_length_penalty(
    lengths: torch.Tensor, correct: torch.Tensor, group_index: torch.Tensor, max_tokens: int, weight: float = 1.0
) -> torch.Tensor:
    """ALP, Adaptive Length Penalty (Xiang et al., "Just Enough Thinking", arXiv 2506.05256, eq. 1), lengths [N] ->
    reward term [N] (≤ 0), added to the correctness reward:

        r_i = − weight · max(p_solved(q_i), 1/K_i) · len_i / max_tokens

    p_solved(q) is the fraction of the prompt's K samples that are correct (the group's online solve rate), K_i the
    size of sample i's group, and max_tokens the paper's normalisation constant N (here the response length limit,
    so weight is the penalty of a full-length response on a prompt always solved). Every sample pays, correct or
    not: easy prompts (high solve rate) pay most per token, never-solved ones the least (1/K), so a policy learns
    to spend tokens where they buy accuracy.

    Args:
        lengths: [N] response lengths (int or float). correct: [N] bool.
        group_index: [N] long prompt-group ids, any values, in any order. max_tokens: > 0.
    """
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be > 0 (got {max_tokens})")
    x = _as_float(lengths)
    _, inverse = torch.unique(group_index, return_inverse=True)
    size = torch.bincount(inverse).to(x.dtype)[inverse]
    solve_rate = group_pass_rate(correct, inverse).to(x.dtype)
    return -weight * torch.maximum(solve_rate, 1.0 / size) * x / max_tokens


def budget_reward_exact(
    lengths: torch.Tensor, correct: torch.Tensor, budget_tokens: torch.Tensor, alpha: float = 0.0003
) -> torch.Tensor:
    """L1 LCPO-Exact (Aggarwal & Welleck, arXiv 2503.04697), lengths [N] -> reward [N]:

        r = 1[correct] − α · |n_gold − n_y|

    n_gold = ``budget_tokens`` [N], the target length stated in each sample's prompt; n_y = ``lengths`` [N].
    The default α = 0.0003 is the paper's. Overshooting and undershooting the budget cost the same.
    """
    x = _as_float(lengths)
    return correct.to(x.dtype) - alpha * (budget_tokens.to(x.dtype) - x).abs()


def budget_reward_max(
    lengths: torch.Tensor,
    correct: torch.Tensor,
    budget_tokens: torch.Tensor,
    alpha: float = 0.0003,
    delta: float = 0.5,
) -> torch.Tensor:
    """L1 LCPO-Max (Aggarwal & Welleck, arXiv 2503.04697), lengths [N] -> reward [N]:

        r = 1[correct] · clip(α · (n_gold − n_y) + δ, 0, 1)

    n_gold is a ceiling, not a target: a correct answer exactly on budget earns δ, shorter ones up to 1, and ones
    over budget by δ/α tokens or more earn 0. Wrong answers always earn 0. Defaults α = 0.0003, δ = 0.5 are the
    paper's.
    """
    x = _as_float(lengths)
    return correct.to(x.dtype) * (alpha * (budget_tokens.to(x.dtype) - x) + delta).clamp(0.0, 1.0)


def difficulty_bin(pass_rate: torch.Tensor, edges: Sequence[float]) -> torch.Tensor:
    """Difficulty bin of each prompt, pass_rate [N] float in [0, 1] -> bin_index [N] long in [0, len(edges)].

    Higher pass rate means easier, so bin 0 is the hardest and bin len(edges) the easiest. Bins are
    (edges[i-1], edges[i]] (``torch.bucketize`` with right=False): a pass rate equal to an edge falls in the lower,
    harder bin. Hence edges=[0.0, ...] puts the never-solved prompts alone in bin 0.
    """
    pass_rate = _as_float(pass_rate)
    bounds = torch.tensor(list(edges), dtype=pass_rate.dtype, device=pass_rate.device)
    if bounds.numel() > 1 and not bool((bounds[1:] > bounds[:-1]).all()):
        raise ValueError(f"edges must be strictly increasing (got {list(edges)})")
    return torch.bucketize(pass_rate, bounds, right=False)


def mean_tokens_by_bin(
    lengths: torch.Tensor, bin_index: torch.Tensor, num_bins: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Overthinking metric: mean response length per difficulty bin, lengths [N] -> (mean [B], count [B]).

    Overthinking shows up as many tokens spent on the easy bins (see ``difficulty_bin`` for the bin order), e.g.
    Chen et al., "Do NOT Think That Much for 2+3=? On the Overthinking of o1-like LLMs" (arXiv 2412.21187).
    An empty bin has mean NaN and count 0, so it cannot pass for a bin of zero-length answers.

    Args:
        lengths: [N] response lengths. bin_index: [N] long in [0, num_bins). num_bins: B.
    Returns:
        mean [B] float (float32 unless ``lengths`` is already float), count [B] long.
    """
    if bin_index.numel() and (int(bin_index.min()) < 0 or int(bin_index.max()) >= num_bins):
        raise ValueError(f"bin_index must lie in [0, {num_bins})")
    # Sum in float64: a large batch of long responses passes 2**24 tokens, where float32 stops counting exactly.
    total = torch.zeros(num_bins, dtype=torch.float64, device=lengths.device).index_add_(0, bin_index, lengths.double())
    count = torch.zeros(num_bins, dtype=torch.long, device=lengths.device).index_add_(
        0, bin_index, torch.ones_like(bin_index))
    mean = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))
    return mean.to(_as_float(lengths).dtype), count


# The overthinking metric's difficulty bins, hardest first: never solved, solved at most half the time, more than
# half, always (edges for ``difficulty_bin``).
DIFFICULTY_EDGES = (0.0, 0.5, 0.999)
DIFFICULTY_NAMES = ("pass0", "pass0-50", "pass50-99", "pass100")


def group_pass_rate(correct: torch.Tensor, group_index: torch.Tensor) -> torch.Tensor:
    """Each sample's group pass rate (the policy's pass rate on its prompt), correct [N] bool -> rate [N] float."""
    groups = int(group_index.max()) + 1 if group_index.numel() else 0
    solved = torch.zeros(groups, dtype=torch.float64).index_add_(0, group_index, correct.double())
    size = torch.zeros(groups, dtype=torch.float64).index_add_(0, group_index, torch.ones_like(correct, dtype=torch.float64))
    return (solved / size.clamp(min=1))[group_index].float()
