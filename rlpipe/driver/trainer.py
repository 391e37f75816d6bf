"""The RL loop. ``Trainer.step`` is the whole algorithm, top to bottom; each phase is one call and one metric.

Optional behaviour is decided when the trainer is built (estimator, loss, KL placement), not branched on here.
"""

from __future__ import annotations

import hashlib
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import torch

from rlpipe.algos.advantages import compute_advantages
from rlpipe.algos.kl import kl_estimate, kl_in_reward
from rlpipe.driver.pools import LearnerGroup, RolloutPool, VerifierPool
from rlpipe.driver.prompts import PromptItem, PromptSource
from rlpipe.learner.batch import build_batch
from rlpipe.rollout.types import Completion, GenerationRequest, SamplingSettings
from rlpipe.verify.types import VerdictKind

log = logging.getLogger(__name__)


@contextmanager
def timed(metrics: dict[str, float], phase: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    metrics[f"timing/{phase}"] = time.perf_counter() - start


def request_seed(*parts: Any) -> int:
    """A stable 63-bit seed from (run seed, step, prompt uid): sampling is reproducible on resume and re-queue."""
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
    ):
        self.prompts = prompts
        self.tokenize = tokenize
        self.pad_id = pad_id
        self.rollout = rollout
        self.verifiers = verifiers
        self.learner = learner
        self.s = settings

    def step(self, step: int) -> dict[str, float]:
        m: dict[str, float] = {}
        with timed(m, "sample"):
            prompts = self.prompts.next_batch(self.s.prompts_per_step)
            requests = self._requests(prompts, step)
        with timed(m, "generate"):
            completions = self.rollout.generate(requests, self.s.sampling)
        with timed(m, "verify"):
            rewards, group_index, kept, verify_stats = self._verify(prompts, completions)
        m.update(verify_stats)
        with timed(m, "batch"):
            batch = build_batch(
                [requests[g].prompt_ids for g in group_index.tolist()],
                [c.response_ids for c in kept],
                [c.logprobs for c in kept],
                self.pad_id,
            )
        with timed(m, "logprobs"):
            logprobs = self.learner.compute_logprobs(batch)
            batch.old_logprobs = logprobs["old_logprobs"]
            batch.ref_logprobs = logprobs.get("ref_logprobs")
        with timed(m, "advantages"):
            if self.s.kl_in_reward and batch.ref_logprobs is not None:
                kl = kl_estimate(batch.old_logprobs, batch.ref_logprobs, self.s.kl_estimator)
                rewards = kl_in_reward(rewards, kl, batch.response_mask, self.s.kl_coef)
            batch.advantages = compute_advantages(self.s.advantage, rewards, group_index, **self.s.advantage_options)
        with timed(m, "update"):
            m.update(self.learner.update(batch))
        with timed(m, "sync_weights"):
            self.rollout.load_weights(self.learner.export_weights())
        m.update(rollout_metrics(kept, rewards, batch))
        return m

    # --- phases -------------------------------------------------------------------------------------------------

    def _requests(self, prompts: Sequence[PromptItem], step: int) -> list[GenerationRequest]:
        return [
            GenerationRequest(p.uid, tuple(self.tokenize(p)), self.s.samples_per_prompt,
                              request_seed(self.s.seed, step, p.uid))
            for p in prompts
        ]

    def _verify(self, prompts: Sequence[PromptItem], completions: Sequence[Completion]):
        """Rewards [N'] and group index [N'] for the completions with a rewardable verdict (infra failures dropped)."""
        by_uid = {p.uid: i for i, p in enumerate(prompts)}
        verdicts, stats = self.verifiers.score([(c.text, prompts[by_uid[c.request_id]].gold) for c in completions])
        kept = [c for c, v in zip(completions, verdicts) if v is not None]
        rewards = torch.tensor([v.reward for v in verdicts if v is not None], dtype=torch.float32)
        group_index = torch.tensor([by_uid[c.request_id] for c in kept], dtype=torch.long)
        return rewards, group_index, kept, stats

    # --- evaluation ---------------------------------------------------------------------------------------------

    def evaluate(self, heldout: Sequence[PromptItem], max_response_tokens: int) -> dict[str, float]:
        """Greedy accuracy on the held-out set (one sample per problem, temperature 0)."""
        requests = [GenerationRequest(p.uid, tuple(self.tokenize(p)), 1, 0) for p in heldout]
        greedy = SamplingSettings(temperature=0.0, top_p=1.0, max_response_tokens=max_response_tokens)
        completions = self.rollout.generate(requests, greedy)
        verdicts, _ = self.verifiers.score([(c.text, p.gold) for c, p in zip(completions, heldout)])
        scored = [v for v in verdicts if v is not None]
        correct = sum(v.kind == VerdictKind.CORRECT for v in scored)
        return {
            "eval/accuracy": correct / max(1, len(scored)),
            "eval/format_rate": sum(v.kind != VerdictKind.PARSE_FAIL for v in scored) / max(1, len(scored)),
            "eval/unscored": float(len(heldout) - len(scored)),
            "eval/response_len": sum(len(c.response_ids) for c in completions) / max(1, len(completions)),
        }


def rollout_metrics(kept: Sequence[Completion], rewards: torch.Tensor, batch) -> dict[str, float]:
    lengths = batch.response_mask.sum(dim=1).float()
    mask = batch.response_mask
    # How far the rollout engine's logprobs are from the learner's for the same tokens and weights.
    diff = (batch.rollout_logprobs - batch.old_logprobs).abs().masked_fill(~mask, 0.0)
    return {
        "rollout/reward_mean": float(rewards.mean()) if len(rewards) else 0.0,
        "rollout/response_len": float(lengths.mean()) if len(lengths) else 0.0,
        "rollout/truncated_frac": sum(c.finish_reason == "length" for c in kept) / max(1, len(kept)),
        "rollout/num_samples": float(len(kept)),
        "rollout/logprob_diff_max": float(diff.max()) if mask.any() else 0.0,
        "rollout/generated_tokens": float(lengths.sum()),
    }
