"""The RL loop. ``Trainer.step`` is the whole algorithm, top to bottom; each phase is one call and one metric.

Optional behaviour (estimator, loss, KL placement, dynamic sampling, overlong shaping, resets) is fixed when the
trainer is built, through ``StepSettings`` and the ``ResetPolicy``; the step itself does not branch on presets.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import torch

from rlpipe.algos.advantages import compute_advantages
from rlpipe.algos.kl import kl_estimate, kl_in_reward
from rlpipe.algos.metrics import auroc, grouped_auroc
from rlpipe.algos.shaping import overlong_penalty, zero_variance_group_mask
from rlpipe.driver.pools import LearnerGroup, RolloutPool, VerifierPool
from rlpipe.driver.prompts import PromptItem, PromptSource
from rlpipe.driver.resets import ResetPolicy
from rlpipe.learner.batch import TrainBatch, build_batch
from rlpipe.rollout.types import Completion, GenerationRequest, SamplingSettings
from rlpipe.verify.types import VerdictKind

log = logging.getLogger(__name__)


@contextmanager
def timed(metrics: dict[str, float], phase: str) -> Iterator[None]:
    """Adds the block's wall time to ``timing/<phase>`` (accumulates when a phase runs several rounds)."""
    start = time.perf_counter()
    yield
    key = f"timing/{phase}"
    metrics[key] = metrics.get(key, 0.0) + time.perf_counter() - start


def request_seed(*parts: Any) -> int:
    """A stable 63-bit seed from (run seed, step, round, prompt uid): sampling is reproducible on resume/re-queue."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class StepSettings:
    prompts_per_step: int
    samples_per_prompt: int
    sampling: SamplingSettings
    advantage: str
    advantage_options: dict
    kl_coef: float
    kl_estimator: str
    kl_in_reward: bool
    seed: int
    dynamic_sampling: bool = False
    max_generation_rounds: int = 1
    overlong_buffer_tokens: int = 0
    overlong_penalty: float = 1.0
    mask_truncated: bool = False
    colocated: bool = False  # rollout engines share devices with the learner: they sleep during its phases
    sprm_exclude_format_failures: bool = True


@dataclass
class Rollouts:
    """Scored completions of a set of prompt groups. ``group_index [N]`` indexes ``prompts``."""

    prompts: list[PromptItem]
    requests: list[GenerationRequest]
    completions: list[Completion]
    rewards: torch.Tensor  # [N]
    correct: torch.Tensor  # [N] bool
    group_index: torch.Tensor  # [N] long
    parse_failed: torch.Tensor  # [N] bool: no answer could be extracted (a format failure)

    def select_groups(self, groups: Sequence[int]) -> "Rollouts":
        keep = torch.isin(self.group_index, torch.tensor(list(groups), dtype=torch.long))
        remap = {g: i for i, g in enumerate(groups)}
        idx = keep.nonzero().flatten().tolist()
        return Rollouts(
            [self.prompts[g] for g in groups], [self.requests[g] for g in groups],
            [self.completions[i] for i in idx], self.rewards[keep], self.correct[keep],
            torch.tensor([remap[int(g)] for g in self.group_index[keep]], dtype=torch.long), self.parse_failed[keep],
        )

    @staticmethod
    def concat(parts: Sequence["Rollouts"]) -> "Rollouts":
        offsets, total = [], 0
        for p in parts:
            offsets.append(total)
            total += len(p.prompts)
        return Rollouts(
            [x for p in parts for x in p.prompts], [x for p in parts for x in p.requests],
            [x for p in parts for x in p.completions],
            torch.cat([p.rewards for p in parts]), torch.cat([p.correct for p in parts]),
            torch.cat([p.group_index + o for p, o in zip(parts, offsets)]),
            torch.cat([p.parse_failed for p in parts]),
        )


class Trainer:
    def __init__(
        self,
        *,
        prompts: PromptSource,
        tokenize: Callable[[PromptItem], list[int]],
        pad_id: int,
        rollout: RolloutPool,
        verifiers: VerifierPool,
        learner: LearnerGroup,
        settings: StepSettings,
        resets: Optional[ResetPolicy] = None,
    ):
        self.prompts = prompts
        self.tokenize = tokenize
        self.pad_id = pad_id
        self.rollout = rollout
        self.verifiers = verifiers
        self.learner = learner
        self.s = settings
        self.resets = resets or ResetPolicy()
        # Which samples the last step trained on ("<prompt uid>#<sample index>"), for the run's ledger.
        self.last_ledger: list[str] = []

    def step(self, step: int) -> dict[str, float]:
        m: dict[str, float] = {}
        rollouts = self.collect(step, m)  # sample -> generate -> verify -> shape -> filter (timed inside)
        with timed(m, "batch"):
            batch = self.to_batch(rollouts)
        if self.s.colocated:
            with timed(m, "engine_sleep"):
                self.rollout.sleep()
        with timed(m, "logprobs"):
            logprobs = self.learner.compute_logprobs(batch)
            batch.old_logprobs = logprobs["old_logprobs"]
            batch.ref_logprobs = logprobs.get("ref_logprobs")
        if "sprm_scores" in logprobs:  # the head scored these rollouts before training on them: a fair AUROC
            m["sprm/auroc"] = auroc(logprobs["sprm_scores"], rollouts.correct)
            # among one prompt's samples: what best-of-N needs (a pooled AUROC also rewards knowing hard prompts)
            m["sprm/auroc_within_prompt"] = grouped_auroc(logprobs["sprm_scores"], rollouts.correct,
                                                         rollouts.group_index)
        with timed(m, "advantages"):
            rewards = rollouts.rewards
            if self.s.kl_in_reward and batch.ref_logprobs is not None:
                kl = kl_estimate(batch.old_logprobs, batch.ref_logprobs, self.s.kl_estimator)
                rewards = kl_in_reward(rewards, kl, batch.response_mask, self.s.kl_coef)
            batch.advantages = compute_advantages(self.s.advantage, rewards, rollouts.group_index,
                                                  **self.s.advantage_options)
        with timed(m, "update"):
            m.update(self.learner.update(batch))
        if self.s.colocated:
            with timed(m, "engine_wake"):
                self.rollout.wake_up()
        with timed(m, "sync_weights"):
            self.rollout.load_weights(self.learner.export_weights())
        m.update(rollout_metrics(rollouts, batch))
        m.update(self._fault_metrics())
        self.last_ledger = [f"{c.request_id}#{c.sample_index}" for c in rollouts.completions]
        return m

    def _fault_metrics(self) -> dict[str, float]:
        """Worker restarts and re-queued items since the last step (evaluation included), then reset."""
        out = {}
        for pool in (self.rollout, self.verifiers):
            for key, value in pool.faults.items():
                out[f"faults/{key}"] = float(value)
            pool.faults.clear()
        return out

    # --- phases -------------------------------------------------------------------------------------------------

    def collect(self, step: int, m: dict[str, float]) -> Rollouts:
        """Generate and score groups; with dynamic sampling keep only informative groups (rewards not all equal)
        and generate more until ``prompts_per_step`` are collected or the rounds run out (shortfall counted)."""
        s = self.s
        kept: list[Rollouts] = []
        num_kept = generated = zero_variance = rounds = 0
        counts: Counter = Counter()
        while num_kept < s.prompts_per_step and rounds < (s.max_generation_rounds if s.dynamic_sampling else 1):
            with timed(m, "sample"):
                prompts = self.prompts.next_batch(s.prompts_per_step - num_kept)
                requests = [GenerationRequest(p.uid, tuple(self.tokenize(p)), s.samples_per_prompt,
                                              request_seed(s.seed, step, rounds, p.uid)) for p in prompts]
            with timed(m, "generate"):
                completions = self.rollout.generate(requests, s.sampling)
            with timed(m, "verify"):
                scored = self._verify(prompts, requests, completions, counts)
            informative = zero_variance_group_mask(scored.rewards, scored.group_index)
            informative_groups = sorted(set(scored.group_index[informative].tolist()))
            with_samples = sorted(set(scored.group_index.tolist()))
            keep = informative_groups if s.dynamic_sampling else with_samples
            kept.append(scored.select_groups(keep))
            num_kept += len(keep)
            generated += len(prompts)
            zero_variance += len(with_samples) - len(informative_groups)
            rounds += 1
        total = max(1, sum(v for k, v in counts.items() if k in {v.value for v in VerdictKind}))
        m.update({
            "verify/pass_rate": counts[VerdictKind.CORRECT.value] / total,
            "verify/parse_fail_frac": counts[VerdictKind.PARSE_FAIL.value] / total,
            "verify/timeout_frac": counts[VerdictKind.TIMEOUT.value] / total,
            "verify/error_frac": counts[VerdictKind.ERROR.value] / total,
            "verify/retried": float(counts["retried"]),
            "verify/dropped": float(counts["dropped"]),
            "filter/rounds": float(rounds),
            "filter/kept_frac": num_kept / max(1, generated),
            "filter/zero_var_frac": zero_variance / max(1, generated),
            "filter/shortfall": float(max(0, s.prompts_per_step - num_kept)),
        })
        rollouts = Rollouts.concat(kept)
        if not rollouts.completions:
            raise RuntimeError(f"step {step}: no scorable samples were collected (all groups filtered or dropped)")
        return rollouts

    def _verify(self, prompts: Sequence[PromptItem], requests: Sequence[GenerationRequest],
                completions: Sequence[Completion], counts: Counter) -> Rollouts:
        """Score, drop infra failures (counted), add the overlong penalty, feed pass rates to the prompt source."""
        by_uid = {p.uid: i for i, p in enumerate(prompts)}
        verdicts, c = self.verifiers.score([(x.text, prompts[by_uid[x.request_id]].gold) for x in completions])
        counts.update(c)
        pairs = [(x, v) for x, v in zip(completions, verdicts) if v is not None]
        kept = [x for x, _ in pairs]
        rewards = torch.tensor([v.reward for _, v in pairs], dtype=torch.float32)
        if self.s.overlong_buffer_tokens:
            lengths = torch.tensor([len(x.response_ids) for x in kept])
            rewards = rewards + self.s.overlong_penalty * overlong_penalty(
                lengths, self.s.sampling.max_response_tokens, self.s.overlong_buffer_tokens)
        correct = torch.tensor([v.kind == VerdictKind.CORRECT for _, v in pairs], dtype=torch.bool)
        group_index = torch.tensor([by_uid[x.request_id] for x in kept], dtype=torch.long)
        parse_failed = torch.tensor([v.kind == VerdictKind.PARSE_FAIL for _, v in pairs], dtype=torch.bool)
        self.prompts.observe({p.uid: correct[group_index == i].tolist() for i, p in enumerate(prompts)})
        return Rollouts(list(prompts), list(requests), kept, rewards, correct, group_index, parse_failed)

    def to_batch(self, rollouts: Rollouts) -> TrainBatch:
        batch = build_batch(
            [rollouts.requests[g].prompt_ids for g in rollouts.group_index.tolist()],
            [c.response_ids for c in rollouts.completions],
            [c.logprobs for c in rollouts.completions],
            self.pad_id,
        )
        if self.s.mask_truncated:  # DAPO overlong filtering: cut-off responses teach nothing about the answer
            truncated = torch.tensor([c.finish_reason == "length" for c in rollouts.completions])
            batch.response_mask[truncated] = False
        # Score-head labels: the outcome; format failures say nothing about the steps, so they can be left out.
        batch.sprm_labels = rollouts.correct.float()
        if self.s.sprm_exclude_format_failures:
            batch.sprm_labels[rollouts.parse_failed] = -1.0
        return batch

    def maybe_reset_reference(self, step: int, metrics: dict[str, float]) -> Optional[dict[str, Any]]:
        """ProRL reference reset, if the policy says so after this step's metrics (and evaluation, if any)."""
        cause = self.resets.cause(step, metrics) if self.resets.enabled else None
        if cause is None:
            return None
        self.learner.reset_reference(self.resets.reset_optimizer)
        event = self.resets.record(step, cause, metrics.get("actor/kl", float("nan")))
        log.info("step %d: reference reset (%s; KL before %.4g)", step, cause, event["kl_before"])
        return event

    # --- evaluation ---------------------------------------------------------------------------------------------

    def evaluate(self, heldout: Sequence[PromptItem], max_response_tokens: int) -> dict[str, float]:
        """Greedy accuracy on the held-out set (one sample per problem, temperature 0)."""
        requests = [GenerationRequest(p.uid, tuple(self.tokenize(p)), 1, 0) for p in heldout]
        greedy = SamplingSettings(temperature=0.0, top_p=1.0, max_response_tokens=max_response_tokens)
        completions = self.rollout.generate(requests, greedy)
        verdicts, _ = self.verifiers.score([(c.text, p.gold) for c, p in zip(completions, heldout)])
        scored = [v for v in verdicts if v is not None]
        n = max(1, len(scored))
        return {
            "eval/accuracy": sum(v.kind == VerdictKind.CORRECT for v in scored) / n,
            "eval/format_rate": sum(v.kind != VerdictKind.PARSE_FAIL for v in scored) / n,
            "eval/unscored": float(len(heldout) - len(scored)),
            "eval/response_len": sum(len(c.response_ids) for c in completions) / max(1, len(completions)),
        }


def rollout_metrics(rollouts: Rollouts, batch: TrainBatch) -> dict[str, float]:
    mask = batch.response_mask
    lengths = torch.tensor([len(c.response_ids) for c in rollouts.completions], dtype=torch.float32)
    # How far the rollout engine's logprobs are from the learner's for the same tokens and weights.
    diff = (batch.rollout_logprobs - batch.old_logprobs).abs().masked_fill(~mask, 0.0)
    return {
        "rollout/reward_mean": float(rollouts.rewards.mean()),
        "rollout/accuracy": float(rollouts.correct.float().mean()),
        "rollout/response_len": float(lengths.mean()),
        "rollout/truncated_frac": sum(c.finish_reason == "length" for c in rollouts.completions) / len(lengths),
        "rollout/num_samples": float(len(lengths)),
        "rollout/logprob_diff_max": float(diff.max()) if mask.any() else 0.0,
        "rollout/generated_tokens": float(lengths.sum()),
    }
