"""The learner's steps for the stages around RL: supervised fine-tuning and preference optimisation.

Mixed into ``LearnerRank`` (the Ray actor forwards calls by name): they use its backend, frozen reference, pad id and
micro-batching, so SFT and preference pairs run on the same token-budget micro-batches, packing, FSDP2 / DeepSpeed
sharding and checkpoints as RL. Every loss is normalised by global counts (tokens for SFT, pairs for preferences)
times the data-parallel size, as the RL objective is (rlpipe.learner.objective).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlpipe.learner.batch import SampleShard
from rlpipe.learner.objective import GlobalCounts, forward_logprobs, supervised_objective


@dataclass(frozen=True)
class PreferenceSettings:
    """``prefer.loss`` and its options (rlpipe.algos.preference)."""

    loss: str
    beta: float
    label_smoothing: float
    simpo_gamma: float


class StageSteps:
    """SFT and preference steps of a learner rank (see the module docstring). Host attributes: ``backend``,
    ``reference_logprobs``, ``pad_id``, ``device``, ``_micro_batch_rows``."""

    # --- supervised fine-tuning -------------------------------------------------------------------------------

    def supervised_update(self, shard: SampleShard, counts: GlobalCounts, lr: float) -> dict[str, float]:
        """One optimizer step at learning rate ``lr`` on the next-token loss of ``shard``'s masked response tokens
        (SFT: one mini-batch; ``counts`` over every rank)."""
        module = self.backend.module
        module.train()
        self.backend.set_lr(lr)
        [micro_rows] = self._micro_batch_rows(shard)
        totals: dict[str, float] = {}
        for i, rows in enumerate(micro_rows):
            micro = shard.to_train_batch(rows.tolist(), self.pad_id, self.packing).to(self.device)
            loss, metrics = supervised_objective(forward_logprobs(module, micro, 1.0).logprobs, micro, counts)
            self.backend.backward(loss, is_last_micro_batch=i == len(micro_rows) - 1)
            _accumulate(totals, metrics)
        totals["actor/grad_norm"] = self.backend.step()
        return totals

    @torch.no_grad()
    def supervised_loss(self, shard: SampleShard) -> dict[str, float]:
        """The summed next-token loss of ``shard``'s masked tokens and their count (a held-out loss; no update)."""
        self.backend.module.eval()
        nll, tokens = 0.0, 0
        for rows in self._micro_batch_rows(shard)[0]:
            micro = shard.to_train_batch(rows.tolist(), self.pad_id, self.packing).to(self.device)
            logprobs = forward_logprobs(self.backend.module, micro, 1.0).logprobs
            nll -= float((logprobs * micro.response_mask).sum())
            tokens += int(micro.response_mask.sum())
        return {"nll_sum": nll, "tokens": float(tokens)}

    # --- preference optimisation ------------------------------------------------------------------------------

    def preference_update(self, shard: SampleShard, num_pairs: int, lr: float, settings: PreferenceSettings,
                          ) -> dict[str, float]:
        """One optimizer step at ``lr`` on the preference loss of ``shard``'s pairs (``num_pairs``: real pairs over
        every rank). Shard layout: pair k is prompt k, its chosen response row 2k and its rejected one row 2k+1;
        ``loss_mask`` False on both rows of a padding pair. Pairs are never split over micro-batches: each is one
        packed unit with its prompt once (whatever ``learner.packing`` says)."""
        module = self.backend.module
        module.train()
        self.backend.set_lr(lr)
        [micro_rows] = self._micro_batch_rows(shard, packing="shared_prefix")
        totals: dict[str, float] = {}
        for i, rows in enumerate(micro_rows):
            loss, metrics = self._pair_loss(shard, rows, num_pairs, settings)
            self.backend.backward(loss, is_last_micro_batch=i == len(micro_rows) - 1)
            _accumulate(totals, metrics)
        totals["actor/grad_norm"] = self.backend.step()
        return totals

    @torch.no_grad()
    def preference_loss(self, shard: SampleShard, num_pairs: int, settings: PreferenceSettings) -> dict[str, float]:
        """The same loss and metrics on held-out pairs, without an update."""
        self.backend.module.eval()
        totals: dict[str, float] = {}
        for rows in self._micro_batch_rows(shard, packing="shared_prefix")[0]:
            loss, metrics = self._pair_loss(shard, rows, num_pairs, settings)
            _accumulate(totals, metrics)
        return totals

    def _pair_loss(self, shard: SampleShard, rows: torch.Tensor, num_pairs: int, settings: PreferenceSettings,
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """This micro-batch's share of the mean pair loss over ``num_pairs`` pairs (× dp size), and its metrics'
        shares of their means over the pairs."""
        from rlpipe.algos.preference import LENGTH_NORMALISED, REFERENCE_FREE, preference_loss, sequence_logprobs

        rows = rows[torch.argsort(rows)]  # (chosen, rejected) of each pair next to each other
        micro = shard.to_train_batch(rows.tolist(), self.pad_id, "shared_prefix").to(self.device)
        mean = LENGTH_NORMALISED[settings.loss]
        seq = sequence_logprobs(forward_logprobs(self.backend.module, micro, 1.0).logprobs, micro.response_mask, mean)
        ref = None
        if not REFERENCE_FREE[settings.loss]:
            with torch.no_grad():
                ref = sequence_logprobs(self.reference_logprobs(micro, 1.0), micro.response_mask, mean)
        real = shard.loss_mask[rows[0::2]].to(self.device)  # [pairs in this micro-batch]
        share = int(real.sum()) / max(1, num_pairs) * self.world_size
        per_pair, metrics = preference_loss(
            settings.loss, seq[0::2][real], seq[1::2][real],
            None if ref is None else ref[0::2][real], None if ref is None else ref[1::2][real],
            beta=settings.beta, label_smoothing=settings.label_smoothing, gamma=settings.simpo_gamma)
        loss = per_pair.sum() / max(1, num_pairs) * self.world_size
        if not real.any():  # a micro-batch of padding pairs still runs its forward (FSDP's collectives) for no loss
            loss = seq.sum() * 0.0
        out = {"prefer/loss": loss.detach()}
        out.update({f"prefer/{k.replace('/', '_')}": v * share for k, v in metrics.items()} if real.any() else {})
        return loss, out


def _accumulate(totals: dict[str, float], metrics: dict[str, torch.Tensor]) -> None:
    for k, v in metrics.items():
        totals[k] = totals.get(k, 0.0) + float(v)
