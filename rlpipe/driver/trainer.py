"""The RL step. ``Trainer.step`` is the whole algorithm, top to bottom; each phase is one call and one metric.

Optional behaviour (estimator, loss, KL placement, dynamic sampling, overlong shaping, resets, colocated engines) is
fixed when the trainer is built, through its settings, the ``ResetPolicy`` and the engines' release/restore calls;
the step itself does not branch on presets.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from rlpipe.algos.advantages import compute_advantages
from rlpipe.algos.kl import kl_in_reward
from rlpipe.algos.length_shaping import (DIFFICULTY_EDGES, DIFFICULTY_NAMES, difficulty_bin, group_pass_rate,
                                         mean_tokens_by_bin)
from rlpipe.algos.metrics import auroc, grouped_auroc
from rlpipe.driver.clients import LearnerClient, RolloutClient, VerifierClient
from rlpipe.driver.collect import Collector, Rollouts
from rlpipe.driver.prompts import PromptItem, make_requests
from rlpipe.driver.resets import ResetPolicy
from rlpipe.driver.timing import timed
from rlpipe.rollout.types import SamplingSettings
from rlpipe.verify.types import VerdictKind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepSettings:
    advantage: str
    advantage_options: dict
    reward_kl_coef: float  # KL subtracted from the reward (RLOO); 0 when the KL is in the loss or off
    mask_truncated: bool  # DAPO overlong filtering: cut-off responses get no loss


def _nothing() -> None:
    pass


class Trainer:
    def __init__(self, *, collector: Collector, rollout: RolloutClient, learner: LearnerClient,
                 settings: StepSettings, resets: ResetPolicy, engines_share_devices: bool):
        self.collector = collector
        self.rollout = rollout
        self.learner = learner
        self.s = settings
        self.resets = resets
        # Colocated engines free their devices while the learner computes (vLLM sleep mode; nothing on CPU).
        self.release_engines: Callable[[], None] = rollout.sleep if engines_share_devices else _nothing
        self.restore_engines: Callable[[], None] = rollout.wake_up if engines_share_devices else _nothing
        self.last_ledger: list[str] = []  # which samples the last step trained on, for the run's ledger
        self.last_versions: list[int] = []  # and the policy version that generated each

    @property
    def prompts(self):
        return self.collector.prompts

    def step(self, step: int) -> dict[str, float]:
        m: dict[str, float] = {}
        start = time.perf_counter()
        rollouts = self.collector.collect(step, m)  # sample -> generate -> verify -> shape -> filter (timed inside)
        if not rollouts.completions:
            return self._skip(step, m, start)
        with timed(m, "engine_sleep"):
            self.release_engines()
        with timed(m, "prepare"):  # samples to the ranks, once: old/reference logprobs, head scores
            prepared = self.learner.prepare(rollouts, self.loss_mask(rollouts))
        with timed(m, "advantages"):
            rewards = kl_in_reward(rollouts.rewards, prepared.get("kl_sum"), self.s.reward_kl_coef)
            advantages = compute_advantages(self.s.advantage, rewards, rollouts.group_index,
                                            **self.s.advantage_options)
        with timed(m, "update"):
            m.update(self.learner.update(advantages))
        with timed(m, "engine_wake"):
            self.restore_engines()
        with timed(m, "sync_weights"):  # handed to the engines; each loads it after the calls it already has
            self.rollout.push_weights(self.learner.export_weights(), version=self.rollout.version + 1)
        m.update(rollout_metrics(rollouts))
        m.update(offpolicy_metrics(prepared, self.loss_mask(rollouts), rollouts))
        m.update(head_metrics(rollouts, prepared))
        m.update(self._fault_metrics())
        self.last_ledger = rollouts.ledger()
        self.last_versions = [c.policy_version for c in rollouts.completions]
        m["timing/step"] = time.perf_counter() - start
        return m

    def _skip(self, step: int, m: dict[str, float], start: float) -> dict[str, float]:
        """No group carried a learning signal (or every sample was dropped): no update this step, counted."""
        log.warning("step %d: every group was filtered or dropped; no update (filter/skipped_step)", step)
        m.update({"filter/skipped_step": 1.0, "rollout/num_samples": 0.0, **self._fault_metrics()})
        self.last_ledger, self.last_versions = [], []
        m["timing/step"] = time.perf_counter() - start
        return m

    def loss_mask(self, rollouts: Rollouts) -> torch.Tensor:
        """[N] bool: the samples that get a loss (all, or with DAPO's overlong filter, those not cut off)."""
        truncated = torch.tensor([c.finish_reason == "length" for c in rollouts.completions], dtype=torch.bool)
        return ~truncated if self.s.mask_truncated else torch.ones_like(truncated)

    def _fault_metrics(self) -> dict[str, float]:
        """Worker restarts and re-queued items since the last step (evaluation included), then reset."""
        out = {}
        for client in (self.rollout, self.collector.verifiers):
            for key, value in client.faults.items():
                out[f"faults/{key}"] = float(value)
            client.faults.clear()
        return out

    def maybe_reset_reference(self, step: int, metrics: dict[str, float]) -> Optional[dict[str, Any]]:
        """ProRL reference reset, if the policy says so after this step's metrics (and evaluation, if any)."""
        cause = self.resets.cause(step, metrics) if self.resets.enabled else None
        if cause is None:
            return None
        self.learner.reset_reference(self.resets.reset_optimizer)
        event = self.resets.record(step, cause, metrics.get("actor/kl", float("nan")))
        log.info("step %d: reference reset (%s; KL before %.4g)", step, cause, event["kl_before"])
        return event


def heldout_accuracy(rollout: RolloutClient, verifiers: VerifierClient, tokenize: Callable[[PromptItem], list[int]],
                     heldout: Sequence[PromptItem], max_response_tokens: int) -> dict[str, float]:
    """Greedy accuracy on the held-out set (one sample per problem, temperature 0)."""
    requests = make_requests(heldout, tokenize, 1, "greedy")
    completions = rollout.generate(requests, SamplingSettings.unforced(temperature=0.0, top_p=1.0,
                                                                       max_response_tokens=max_response_tokens))
    # A rollout a tool could not serve is not scored (it counts in eval/unscored, like a verifier failure).
    verdicts, _ = verifiers.score([(c.scorable_text, p.gold) for c, p in zip(completions, heldout)])
    metrics = _accuracy_metrics("eval/", verdicts, completions, len(heldout))
    metrics.update(tool_metrics("eval/", completions, [v is not None and v.kind == VerdictKind.CORRECT
                                                       for v in verdicts]))
    for mode in sorted({p.mode for p in heldout} - {"none"}):  # each mode's own accuracy, length and format
        mine = [i for i, p in enumerate(heldout) if p.mode == mode]
        metrics.update(_accuracy_metrics(f"eval/{mode}/", [verdicts[i] for i in mine],
                                         [completions[i] for i in mine], len(mine)))
    return metrics


def _accuracy_metrics(prefix: str, verdicts, completions, asked: int) -> dict[str, float]:
    """Accuracy and format rate over the scored verdicts (a mode's format: its rules held, rlpipe.tasks.modes)."""
    scored = [v for v in verdicts if v is not None]
    n = max(1, len(scored))
    return {
        f"{prefix}accuracy": sum(v.kind == VerdictKind.CORRECT for v in scored) / n,
        f"{prefix}format_rate": sum(v.details.get("format_followed", v.kind != VerdictKind.PARSE_FAIL)
                                    for v in scored) / n,
        f"{prefix}unscored": float(asked - len(scored)),
        f"{prefix}response_len": sum(len(c.response_ids) for c in completions) / max(1, len(completions)),
    }


def rollout_metrics(rollouts: Rollouts) -> dict[str, float]:
    lengths = torch.tensor([len(c.response_ids) for c in rollouts.completions], dtype=torch.float32)
    return {
        "rollout/reward_mean": float(rollouts.rewards.mean()),
        "rollout/accuracy": float(rollouts.correct.float().mean()),
        "rollout/response_len": float(lengths.mean()),
        "rollout/truncated_frac": sum(c.finish_reason == "length" for c in rollouts.completions) / len(lengths),
        "rollout/num_samples": float(len(lengths)),
        "rollout/generated_tokens": float(lengths.sum()),
        **tokens_by_difficulty("calibration/", lengths, rollouts.correct, rollouts.group_index),
        **tool_metrics("rollout/", rollouts.completions, rollouts.correct.tolist()),
    }


def tool_metrics(prefix: str, completions: Sequence, correct: Sequence[bool]) -> dict[str, float]:
    """Multi-turn rollouts (none for one-turn ones): how often the model called a tool, how many of its calls ran
    without an error, its turns and own tokens, and the accuracy with and without a call."""
    if not any(c.token_mask is not None for c in completions):
        return {}
    n = max(1, len(completions))
    calls = sum(c.tool_calls for c in completions)
    with_tool = [ok for c, ok in zip(completions, correct) if c.tool_calls]
    without = [ok for c, ok in zip(completions, correct) if not c.tool_calls]
    out = {
        f"{prefix}tool_call_rate": sum(c.tool_calls > 0 for c in completions) / n,
        f"{prefix}tool_calls_mean": calls / n,
        f"{prefix}turns_mean": sum(c.turns for c in completions) / n,
        f"{prefix}model_tokens_mean": sum(sum(c.token_mask) if c.token_mask is not None else len(c.response_ids)
                                          for c in completions) / n,
    }
    if calls:  # the share of calls that ran without an error (bad JSON, unknown tool, a refused expression, ...)
        out[f"{prefix}tool_success_rate"] = (calls - sum(c.tool_errors for c in completions)) / calls
    if with_tool:
        out[f"{prefix}accuracy_with_tool"] = sum(with_tool) / len(with_tool)
    if without:
        out[f"{prefix}accuracy_without_tool"] = sum(without) / len(without)
    return out


def tokens_by_difficulty(prefix: str, lengths: torch.Tensor, correct: torch.Tensor,
                         group_index: torch.Tensor) -> dict[str, float]:
    """The overthinking metric: mean response tokens by the policy's pass rate on the prompt (its group's share of
    correct samples), one entry per non-empty bin of rlpipe.algos.length_shaping.DIFFICULTY_EDGES."""
    bins = difficulty_bin(group_pass_rate(correct, group_index), DIFFICULTY_EDGES)
    mean, count = mean_tokens_by_bin(lengths, bins, len(DIFFICULTY_NAMES))
    return {f"{prefix}tokens_{name}": float(m) for name, m, c in zip(DIFFICULTY_NAMES, mean, count) if c > 0}


def offpolicy_metrics(prepared: dict[str, torch.Tensor], loss_mask: torch.Tensor,
                      rollouts: Rollouts) -> dict[str, float]:
    """The off-policy correction's weights over the trained tokens, and the share of tokens it truncated or left out
    (rlpipe.algos.offpolicy). Without a correction the weights are 1 and nothing is limited."""
    lengths = torch.tensor([len(c.response_ids) for c in rollouts.completions], dtype=torch.float32)
    trained = float(prepared["trained_tokens"].sum())
    limited = prepared.get("is_limited")
    return {
        "offpolicy/is_weight_mean": float(prepared["is_weight_sum"].sum()) / max(1.0, trained),
        "offpolicy/is_weight_max": float(prepared["is_weight_max"].max()),
        "offpolicy/limited_frac": (float(limited.sum()) if limited is not None else 0.0)
        / max(1.0, float((lengths * loss_mask).sum())),
    }


def head_metrics(rollouts: Rollouts, prepared: dict[str, torch.Tensor]) -> dict[str, float]:
    """For each auxiliary head that scores samples: how well its scores (taken before training on these samples, so
    a fair test) rank correct above wrong, pooled and among one prompt's samples (what best-of-N needs); beside them,
    the same for the policy's own confidence (mean sampled-token logprob), the free baseline a head has to beat."""
    out = {}
    for key, scores in prepared.items():
        if key.endswith("_scores"):
            name = key.removesuffix("_scores")
            out[f"{name}/auroc"] = auroc(scores, rollouts.correct)
            out[f"{name}/auroc_within_prompt"] = grouped_auroc(scores, rollouts.correct, rollouts.group_index)
    if out:
        confidence = torch.tensor([c.confidence for c in rollouts.completions])
        out["confidence/auroc"] = auroc(confidence, rollouts.correct)
        out["confidence/auroc_within_prompt"] = grouped_auroc(confidence, rollouts.correct, rollouts.group_index)
    return out
