"""Preference-optimisation losses on (chosen, rejected) pairs: DPO, IPO, SimPO and SimPER.

Every loss takes per-pair sequence log-probabilities, [B] each, and returns ``(per_pair_loss [B], metrics)``; the
caller averages over pairs. ``sequence_logprobs`` turns per-token logprobs [B, T] into the sum (DPO) or the mean
over response tokens (IPO, SimPO, SimPER: length-normalised) the losses take. Notation: y_w chosen, y_l rejected,
π the policy, π_ref the frozen reference, σ the logistic function.

    DPO (Rafailov et al. 2023, arXiv 2305.18290, eq. 7), with conservative label smoothing ε (Mitchell 2023):
        h = [log π(y_w) − log π_ref(y_w)] − [log π(y_l) − log π_ref(y_l)]      (sums over response tokens)
        L = −(1 − ε) log σ(β h) − ε log σ(−β h)
    TRL's DPOTrainer ``loss_type="sigmoid"``: the same h (token-summed log-probs of the completion, minus the
    reference's) and the same −log σ(β h) (trl 1.16, trl/trainer/dpo_trainer.py, ``_compute_loss``), compared on the
    same log-probabilities in tests/algos/test_preference.py.

    IPO (Azar et al. 2023, arXiv 2310.12036, the empirical IPO loss): L = (h − 1/(2β))², h from per-token MEAN log-probs (the
    length normalisation TRL uses and the IPO authors confirmed).

    SimPO (Meng et al. 2024, arXiv 2405.14734, eq. 6), reference-free:
        L = −log σ(β [mean log π(y_w) − mean log π(y_l)] − γ)

    SimPER (Xiao et al. 2025, arXiv 2502.00883), reference-free and without hyper-parameters — EXAONE 4.0's
    preference stage: the inverse perplexity of the chosen response up, of the rejected one down,
        L = −exp(mean log π(y_w)) + exp(mean log π(y_l))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlpipe.registry import Registry

PREFERENCE_LOSSES: Registry = Registry("preference loss")
# Which sequence log-probability each loss reads: the token sum or the per-token mean.
LENGTH_NORMALISED = {"dpo": False, "ipo": True, "simpo": True, "simper": True}
REFERENCE_FREE = {"dpo": False, "ipo": False, "simpo": True, "simper": True}


def sequence_logprobs(token_logprobs: torch.Tensor, mask: torch.Tensor, mean: bool) -> torch.Tensor:
    """[B, T] token logprobs and mask -> [B]: their sum over the masked tokens, or the mean (an empty row gives 0)."""
    total = (token_logprobs * mask).sum(dim=-1)
    return total / mask.sum(dim=-1).clamp(min=1) if mean else total


def _margin_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, torch.Tensor]:
    """Implicit rewards (what the loss pushes apart), as TRL logs them: their means, margin and accuracy."""
    chosen, rejected = chosen.detach(), rejected.detach()
    return {"rewards/chosen": chosen.mean(), "rewards/rejected": rejected.mean(),
            "rewards/margin": (chosen - rejected).mean(), "rewards/accuracy": (chosen > rejected).float().mean()}


@PREFERENCE_LOSSES.register("dpo")
def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, *,
             beta: float = 0.1, label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO's sigmoid loss. All inputs [B]: token-summed log-probs of the chosen / rejected responses under the
    policy and the reference. Returns [B] and metrics (rewards = β × log-ratio, as in the paper's §5)."""
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    h = chosen_ratio - rejected_ratio
    loss = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    return loss, _margin_metrics(beta * chosen_ratio, beta * rejected_ratio)


@PREFERENCE_LOSSES.register("ipo")
def ipo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, *,
             beta: float = 0.1, label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IPO's squared loss. Inputs [B]: per-token MEAN log-probs (policy and reference). ``label_smoothing`` is not
    defined for IPO and must be 0."""
    if label_smoothing:
        raise ValueError("ipo takes no label smoothing")
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    loss = (chosen_ratio - rejected_ratio - 1.0 / (2.0 * beta)) ** 2
    return loss, _margin_metrics(beta * chosen_ratio, beta * rejected_ratio)


@PREFERENCE_LOSSES.register("simpo")
def simpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, *, beta: float = 2.0, gamma: float = 1.0,
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SimPO. Inputs [B]: per-token MEAN log-probs under the policy (no reference). β scales, γ is the target
    margin."""
    loss = -F.logsigmoid(beta * (chosen - rejected) - gamma)
    return loss, _margin_metrics(beta * chosen, beta * rejected)


@PREFERENCE_LOSSES.register("simper")
def simper_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SimPER. Inputs [B]: per-token MEAN log-probs under the policy (no reference, no hyper-parameters). The
    rewards in the metrics are the inverse perplexities, in (0, 1]."""
    chosen_ipp, rejected_ipp = chosen.exp(), rejected.exp()
    return rejected_ipp - chosen_ipp, _margin_metrics(chosen_ipp, rejected_ipp)


def preference_loss(name: str, chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor | None = None,
                    ref_rejected: torch.Tensor | None = None, *, beta: float = 0.1, label_smoothing: float = 0.0,
                    gamma: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Any registered loss by name, given what each takes: reference log-probs [B] for DPO and IPO (None for the
    reference-free SimPO and SimPER), β for all but SimPER, label smoothing for DPO, SimPO's margin γ."""
    fn = PREFERENCE_LOSSES.get(name)
    if not REFERENCE_FREE[name]:
        if ref_chosen is None or ref_rejected is None:
            raise ValueError(f"{name} needs the reference's log-probabilities")
        return fn(chosen, rejected, ref_chosen, ref_rejected, beta=beta, label_smoothing=label_smoothing)
    if name == "simpo":
        return fn(chosen, rejected, beta=beta, gamma=gamma)
    return fn(chosen, rejected)
