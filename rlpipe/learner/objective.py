"""The learner's objective: policy loss + KL to the reference − entropy bonus, assembled from ``rlpipe.algos``.

Normalisation (the part most frameworks get subtly wrong): every term is divided by GLOBAL counts — tokens or
sequences over the whole mini-batch, all micro-batches and all ranks — and multiplied by the data-parallel size,
because FSDP/DeepSpeed average gradients over ranks. So summing micro-batch gradients on a rank, then averaging over
ranks, gives exactly the gradient of the whole mini-batch's loss processed at once. Metrics use the same weighting:
summed over a rank's micro-batches and averaged over ranks they are the mini-batch's global values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from rlpipe.algos.aggregation import aggregate_loss
from rlpipe.algos.entropy import entropy_from_logits
from rlpipe.algos.kl import kl_estimate, kl_loss
from rlpipe.algos.policy_loss import compute_policy_loss
from rlpipe.learner.batch import TrainBatch
from rlpipe.learner.heads import Forward


@dataclass(frozen=True)
class ObjectiveSettings:
    """The loss's settings, flattened from ``algorithm.*`` by the driver's builder (defaults live in the schema)."""

    policy_loss: str
    clip_low: float
    clip_high: float
    dual_clip: Optional[float]
    loss_aggregation: str
    loss_constant: Optional[float]
    kl_coef: float
    kl_estimator: str
    kl_level: str
    kl_in_loss: bool
    entropy_coef: float
    temperature: float  # the rollout temperature: logprobs are taken under the sampling distribution

    def policy_loss_options(self) -> dict:
        options = {"clip_low": self.clip_low, "clip_high": self.clip_high}
        if self.policy_loss == "ppo_clip":
            options["dual_clip"] = self.dual_clip
        if self.policy_loss == "pg":
            options = {}
        return options


@dataclass(frozen=True)
class GlobalCounts:
    """Counts over the whole mini-batch (all micro-batches, all ranks), and the number of data-parallel ranks."""

    num_tokens: int
    num_seqs: int
    dp_size: int

    @staticmethod
    def of(response_mask: torch.Tensor, dp_size: int) -> "GlobalCounts":
        return GlobalCounts(
            num_tokens=max(1, int(response_mask.sum())),
            num_seqs=max(1, int(response_mask.any(dim=1).sum())),
            dp_size=dp_size,
        )

    @staticmethod
    def of_lengths(response_lengths: torch.Tensor, loss_mask: torch.Tensor, dp_size: int) -> "GlobalCounts":
        """The same counts from per-sample response lengths [n] and loss mask [n] (no padded tensors needed)."""
        lengths = response_lengths.long() * loss_mask.long()
        return GlobalCounts(num_tokens=max(1, int(lengths.sum())), num_seqs=max(1, int((lengths > 0).sum())),
                            dp_size=dp_size)


def forward_logprobs(
    model: torch.nn.Module, batch: TrainBatch, temperature: float, with_entropy: bool = False,
    hidden_layers: Sequence[int] = (), timings: Optional[dict[str, float]] = None, with_top_logprob: bool = False,
) -> Forward:
    """Logprobs of the response tokens under ``softmax(logits / temperature)``; optionally the per-token entropy,
    the most likely token's logprob, and the hidden states of ``hidden_layers`` (indices into ``hidden_states``: -2
    is the second-to-last) at the response positions, [N, T, H]. ``timings``, if given, gets ``entropy_seconds``,
    ``top_logprob_seconds`` and ``hidden_seconds``: what each added (a head that reads them pays for them where the
    forward would not compute them otherwise)."""
    p = batch.prompt_len
    n, t = batch.response_mask.shape
    timings = timings if timings is not None else {}
    if batch.packed is not None:
        logits, hidden = _packed_forward(model, batch, hidden_layers, timings)
        logits = logits.view(n, t, -1)
    else:
        # Logits for the last T+1 positions only (the output layer never runs over the prompt): position p-1+t
        # predicts input_ids[:, p+t], so the last position's are dropped.
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                    output_hidden_states=bool(hidden_layers), logits_to_keep=t + 1)
        logits = out.logits[:, :-1].float()  # [N, T, V]
        hidden = {layer: out.hidden_states[layer][:, p:] for layer in hidden_layers}
        timings["hidden_seconds"] = 0.0  # views of what the forward returned
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    targets = batch.input_ids[:, p:]  # [N, T]
    # log_softmax via logsumexp: never materialises a second [N, T, V] tensor of probabilities. The logsumexp is
    # written out, its max shifted out (detached: a constant shift, the gradient is exactly the softmax): ~1.5x
    # faster than torch.logsumexp on CPU here, and the max is the most likely token's logit, free for the heads.
    top_logit = logits.amax(dim=-1)  # [N, T]
    shift = top_logit.detach().unsqueeze(-1)
    lse = shift.squeeze(-1) + (logits - shift).exp().sum(dim=-1).log()  # [N, T]
    logprobs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    logprobs = logprobs.masked_fill(~batch.response_mask, 0.0)
    start = time.perf_counter()
    entropy = entropy_from_logits(logits, logsumexp=lse) if with_entropy else None
    middle = time.perf_counter()
    top = (top_logit - lse).masked_fill(~batch.response_mask, 0.0) if with_top_logprob else None
    timings["entropy_seconds"] = middle - start
    timings["top_logprob_seconds"] = time.perf_counter() - middle
    return Forward(logprobs, entropy, hidden, top)


def _packed_forward(model: torch.nn.Module, batch: TrainBatch, hidden_layers: Sequence[int], timings: dict[str, float],
                    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """One forward over the packed stream: the logits that predict each response token, [N*T, V] float (the output
    layer runs only there), and the asked-for layers' hidden states at the response positions laid out as the padded
    batch's, [N, T, H] (``timings["hidden_seconds"]``: that gather, which only the heads need)."""
    from rlpipe.learner.packing import LAYOUT_KWARG, MASK_KWARG, mask_placeholder, packed_attention_on

    layout = batch.packed
    with packed_attention_on(model):
        out = model(input_ids=layout.input_ids, attention_mask=mask_placeholder(layout.input_ids.device),
                    position_ids=layout.position_ids, logits_to_keep=layout.predict,
                    output_hidden_states=bool(hidden_layers), **{LAYOUT_KWARG: layout, MASK_KWARG: layout.row_mask()})
    start = time.perf_counter()
    response_index = layout.padded_index[:, batch.prompt_len:]  # [N, T] stream positions
    flat = response_index.reshape(-1)  # index_select: several times faster here than indexing with a 2-D tensor
    hidden = {layer: out.hidden_states[layer][0].index_select(0, flat).view(*response_index.shape, -1)
              for layer in hidden_layers}
    timings["hidden_seconds"] = time.perf_counter() - start
    return out.logits[0].float(), hidden


def _token_weighted_mean(values: torch.Tensor, mask: torch.Tensor, counts: GlobalCounts) -> torch.Tensor:
    """A metric's share of the global token mean: sum over this micro-batch's tokens / global tokens × dp size."""
    return (values.detach() * mask).sum() / counts.num_tokens * counts.dp_size


def policy_objective(
    logprobs: torch.Tensor,
    entropy: Optional[torch.Tensor],
    batch: TrainBatch,
    counts: GlobalCounts,
    settings: ObjectiveSettings,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss of one micro-batch, normalised by the global counts (see the module docstring).

    Args:
        logprobs: [N, T] current policy, with grad. entropy: [N, T] or None.
        batch: carries advantages [N], old_logprobs [N, T], ref_logprobs [N, T] (if KL), response_mask [N, T].
    Returns:
        (scalar loss, metrics) — metrics are this micro-batch's shares of the global values.
    """
    mask = batch.response_mask
    agg = dict(
        mode=settings.loss_aggregation,
        num_global_tokens=counts.num_tokens,
        num_global_seqs=counts.num_seqs,
        dp_size=counts.dp_size,
        constant=settings.loss_constant,
    )
    per_token, pl_metrics = compute_policy_loss(
        settings.policy_loss, logprobs, batch.old_logprobs, batch.advantages, mask, **settings.policy_loss_options()
    )
    if batch.is_weights is not None:  # off-policy correction: w_t × the surrogate (weights are constants)
        per_token = per_token * batch.is_weights
    pg_loss = aggregate_loss(per_token, mask, **agg)
    loss = pg_loss
    metrics = {"actor/pg_loss": pg_loss.detach()}
    if "clipfrac" in pl_metrics:
        # The loss's clipfrac is a local token mean: reweight it into a share of the global mean.
        local_tokens = max(1, int(mask.sum()))
        metrics["actor/clipfrac"] = pl_metrics["clipfrac"].detach() * local_tokens / counts.num_tokens * counts.dp_size

    if batch.ref_logprobs is not None:
        kl = kl_estimate(logprobs, batch.ref_logprobs, settings.kl_estimator)  # [N, T]
        metrics["actor/kl"] = _token_weighted_mean(kl, mask, counts)
        if settings.kl_in_loss and settings.kl_coef > 0:
            kl_term = kl_loss(kl, mask, settings.kl_level, **agg)
            loss = loss + settings.kl_coef * kl_term
            metrics["actor/kl_loss"] = kl_term.detach()

    if entropy is not None:
        metrics["actor/entropy"] = _token_weighted_mean(entropy, mask, counts)
        if settings.entropy_coef > 0:
            loss = loss - settings.entropy_coef * aggregate_loss(entropy, mask, **agg)

    with torch.no_grad():
        log_ratio = (logprobs.detach() - batch.old_logprobs) * mask
        metrics["actor/ratio_mean"] = _token_weighted_mean(log_ratio.exp(), mask, counts)
    return loss, metrics


def supervised_objective(logprobs: torch.Tensor, batch: TrainBatch, counts: GlobalCounts,
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Next-token negative log-likelihood of one micro-batch's masked response tokens (SFT), normalised like the
    policy loss: Σ_{local i,t} −log π(y_it | y_<it) / global tokens × dp size, so micro-batches and ranks sum to the
    whole mini-batch's token mean (the loss Hugging Face models return for ``labels``, over the global batch).

    Args:
        logprobs: [N, T] with grad, the targets' logprobs at temperature 1. batch.response_mask: [N, T].
    """
    loss = aggregate_loss(-logprobs, batch.response_mask, mode="token_mean", num_global_tokens=counts.num_tokens,
                          num_global_seqs=counts.num_seqs, dp_size=counts.dp_size)
    return loss, {"sft/loss": loss.detach()}
