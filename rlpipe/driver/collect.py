"""The first half of an RL step: sample prompts -> generate -> verify -> shape -> filter, into ``Rollouts``.

With DAPO's dynamic sampling, groups whose samples all got the same reward are dropped and more prompts generated
until ``prompts_per_step`` informative groups are collected or the rounds run out (the shortfall is counted). A step
never holds one prompt twice: later rounds draw prompts the step does not have yet.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from rlpipe.algos.shaping import overlong_penalty, zero_variance_group_mask
from rlpipe.driver.clients import RolloutClient, VerifierClient
from rlpipe.driver.prompts import PromptItem, PromptSource, make_requests
from rlpipe.driver.timing import timed
from rlpipe.rollout.types import Completion, GenerationRequest, SamplingSettings
from rlpipe.verify.types import VerdictKind


@dataclass(frozen=True)
class CollectSettings:
    prompts_per_step: int
    samples_per_prompt: int
    sampling: SamplingSettings
    seed: int
    dynamic_sampling: bool
    max_generation_rounds: int
    overlong_buffer_tokens: int
    overlong_penalty: float


@dataclass
class Rollouts:
    """Scored completions of a set of prompt groups. ``group_index [N]`` indexes ``prompts`` and ``requests``."""

    prompts: list[PromptItem]
    requests: list[GenerationRequest]
    completions: list[Completion]
    rewards: torch.Tensor  # [N]
    correct: torch.Tensor  # [N] bool
    group_index: torch.Tensor  # [N] long
    parse_failed: torch.Tensor  # [N] bool: no answer could be extracted (a format failure)

    def select_groups(self, groups: Sequence[int]) -> "Rollouts":
        """The samples of ``groups`` (indices into ``prompts``), renumbered 0..len(groups)-1 in that order."""
        keep = torch.isin(self.group_index, torch.tensor(list(groups), dtype=torch.long))
        remap = {g: i for i, g in enumerate(groups)}
        idx = keep.nonzero().flatten().tolist()
        return Rollouts(
            [self.prompts[g] for g in groups], [self.requests[g] for g in groups],
            [self.completions[i] for i in idx], self.rewards[keep], self.correct[keep],
            torch.tensor([remap[int(g)] for g in self.group_index[keep]], dtype=torch.long), self.parse_failed[keep],
        )

    @staticmethod
    def empty() -> "Rollouts":
        none = torch.zeros(0)
        return Rollouts([], [], [], none, none.bool(), none.long(), none.bool())

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

    def ledger(self) -> list[str]:
        """Which samples these are ("<prompt uid>#<sample index>"): the run's ledger proves each trained once."""
        return [f"{c.request_id}#{c.sample_index}" for c in self.completions]


class Collector:
    def __init__(self, prompts: PromptSource, tokenize: Callable[[PromptItem], list[int]], rollout: RolloutClient,
                 verifiers: VerifierClient, settings: CollectSettings):
        self.prompts = prompts
        self.tokenize = tokenize
        self.rollout = rollout
        self.verifiers = verifiers
        self.s = settings

    def collect(self, step: int, m: dict[str, float]) -> Rollouts:
        """Generate and score groups until ``prompts_per_step`` are kept (timed per phase into ``m``). May be empty:
        every group filtered (all samples of every prompt equally rewarded) or dropped (infrastructure failures)."""
        s = self.s
        kept: list[Rollouts] = []
        in_step: set[str] = set()
        num_kept = generated = zero_variance = rounds = 0
        counts: Counter = Counter()
        while num_kept < s.prompts_per_step and rounds < (s.max_generation_rounds if s.dynamic_sampling else 1):
            with timed(m, "sample"):
                prompts = self.prompts.next_batch(s.prompts_per_step - num_kept, exclude=in_step)
                requests = make_requests(prompts, self.tokenize, s.samples_per_prompt, s.seed, step, rounds)
            if not prompts:
                break  # a fixed pool with no prompt left that this step does not already have
            in_step.update(p.uid for p in prompts)
            with timed(m, "generate"):
                completions = self.rollout.generate(requests, s.sampling)
            with timed(m, "verify"):
                scored = self.verify(prompts, requests, completions, counts)
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
        return Rollouts.concat(kept) if kept else Rollouts.empty()

    def verify(self, prompts: Sequence[PromptItem], requests: Sequence[GenerationRequest],
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
