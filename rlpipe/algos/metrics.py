"""Evaluation metrics over sampled candidates: pass@k, majority vote, best-of-N by a score, AUROC.

Shapes: Q questions, n candidates per question.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Hashable, Optional, Sequence

import torch


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021, arXiv 2107.03374): 1 − C(n−c, k) / C(n, k)."""
    if k > num_samples:
        raise ValueError(f"pass@{k} needs at least {k} samples per question (got {num_samples})")
    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - math.comb(num_samples - num_correct, k) / math.comb(num_samples, k)


def _groups(n: int, size: int) -> list[range]:
    """Split n candidates into consecutive groups of ``size`` (the remainder is dropped), as XBai o4's metric."""
    if size > n:
        raise ValueError(f"groups of {size} need at least {size} candidates per question (got {n})")
    return [range(g * size, (g + 1) * size) for g in range(n // size)]


def majority_at_k(answers: Sequence[Sequence[Optional[Hashable]]], correct: torch.Tensor, k: int) -> float:
    """maj@k: in each group of k candidates, the most frequent extracted answer (ties: the earliest) is the pick;
    accuracy averaged over groups and questions. Candidates without an answer (None) never win a vote.

    Args:
        answers: Q lists of n extracted answers. correct: [Q, n] bool.
    """
    accs = []
    for q, row in enumerate(answers):
        for group in _groups(len(row), k):
            votes = Counter(row[i] for i in group if row[i] is not None)
            if not votes:
                accs.append(0.0)
                continue
            top = max(votes.values())
            winner = next(row[i] for i in group if row[i] is not None and votes[row[i]] == top)
            pick = next(i for i in group if row[i] == winner)
            accs.append(float(correct[q, pick]))
    return sum(accs) / len(accs)


def best_of_n(scores: torch.Tensor, correct: torch.Tensor, n: int) -> float:
    """Best-of-N by score: in each group of N candidates the highest-scored one is picked; accuracy of the picks,
    averaged over groups and questions (XBai o4's metric: all candidates split into groups of N).

    Args:
        scores: [Q, m] candidate scores. correct: [Q, m] bool.
    """
    accs = []
    for q in range(scores.shape[0]):
        for group in _groups(scores.shape[1], n):
            idx = torch.tensor(list(group))
            accs.append(float(correct[q, idx[scores[q, idx].argmax()]]))
    return sum(accs) / len(accs)


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (ties count one half); NaN if one class is absent.

    Equals the probability that a random positive outranks a random negative (Mann–Whitney U).
    """
    scores, labels = scores.flatten().double(), labels.flatten().bool()
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos.unsqueeze(1) > neg.unsqueeze(0)).double().sum()
    ties = (pos.unsqueeze(1) == neg.unsqueeze(0)).double().sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def within_question_auroc(scores: torch.Tensor, correct: torch.Tensor) -> float:
    """Mean over questions (those with both right and wrong candidates) of the AUROC among that question's
    candidates: what best-of-N needs. A pooled AUROC can be high just because a score tracks how hard a question is.

    Args:
        scores: [Q, n]. correct: [Q, n] bool.
    """
    return grouped_auroc(scores.flatten(), correct.flatten(),
                         torch.arange(scores.shape[0]).repeat_interleave(scores.shape[1]))


def grouped_auroc(scores: torch.Tensor, correct: torch.Tensor, group_index: torch.Tensor) -> float:
    """``within_question_auroc`` for groups of any size: the mean over groups with both outcomes of the AUROC among
    that group's candidates; NaN if no group has both.

    Args:
        scores: [N]. correct: [N] bool. group_index: [N] long, the question of each candidate.
    """
    per_group = [auroc(scores[group_index == g], correct[group_index == g]) for g in group_index.unique().tolist()]
    usable = [a for a in per_group if not math.isnan(a)]
    return sum(usable) / len(usable) if usable else float("nan")
