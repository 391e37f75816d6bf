"""The first half of an RL step: sample prompts -> generate -> verify -> shape -> filter, into ``Rollouts``.

With DAPO's dynamic sampling, groups whose samples all got the same reward are dropped and more prompts generated
until ``prompts_per_step`` informative groups are collected or the rounds run out (the shortfall is counted). A step
never holds one prompt twice: later rounds draw prompts the step does not have yet.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from rlpipe.algos.length_shaping import (adaptive_length_penalty, budget_reward_exact, budget_reward_max,
                                         group_length_penalty)
from rlpipe.algos.shaping import overlong_penalty, zero_variance_group_mask
from rlpipe.driver.clients import PendingGeneration, RolloutClient, VerifierClient
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
    max_staleness_steps: int  # 0: generate each step's samples at its start; k: up to k steps ahead
    length_penalty: str  # kimi (Kimi k1.5's group-relative length reward) | alp (ALP, scaled by the solve rate)
    length_penalty_weight: float  # 0 = off
    budget_reward: str  # L1: none | exact | max, for prompts with gold["budget_tokens"]
    budget_reward_alpha: float
    budget_reward_delta: float


@dataclass
class Draw:
    """One generation round of a step: its prompts and requests, in flight (``pending``) or done (``completions``)."""

    step: int
    round: int
    prompts: list[PromptItem]
    requests: list[GenerationRequest]
    pending: Optional[PendingGeneration] = None
    completions: Optional[list[Completion]] = None


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
    """Collects each step's rollouts. With ``max_staleness_steps = k`` the first round of steps t..t+k is in flight
    while step t trains: the engines generate ahead with the weights they have (at most k versions behind the
    learner when trained); ``k = 0`` is the synchronous step. Later rounds (dynamic sampling's refills) are drawn and
    generated when needed."""

    def __init__(self, prompts: PromptSource, tokenize: Callable[[PromptItem], list[int]], rollout: RolloutClient,
                 verifiers: VerifierClient, settings: CollectSettings):
        self.prompts = prompts
        self.tokenize = tokenize
        self.rollout = rollout
        self.verifiers = verifiers
        self.s = settings
        self.ahead: dict[int, Draw] = {}  # step -> its first round, drawn and submitted before the step

    def _draw(self, step: int, round_: int, n: int, exclude: set[str]) -> Draw:
        prompts = self.prompts.next_batch(n, exclude=exclude)
        requests = make_requests(prompts, self.tokenize, self.s.samples_per_prompt, self.s.seed, step, round_)
        draw = Draw(step, round_, prompts, requests)
        if prompts:
            draw.pending = self.rollout.submit(requests, self.s.sampling)
        return draw

    def fill(self, step: int) -> None:
        """Draw and submit the first round of steps ``step`` .. ``step + max_staleness_steps`` not yet in flight."""
        for ahead in range(step, step + self.s.max_staleness_steps + 1):
            if ahead not in self.ahead:
                self.ahead[ahead] = self._draw(ahead, 0, self.s.prompts_per_step, set())

    def _completions(self, draw: Draw) -> list[Completion]:
        if draw.completions is None:
            draw.completions = self.rollout.wait(draw.pending) if draw.pending is not None else []
            draw.pending = None
        return draw.completions

    def drain(self) -> None:
        """Wait for every round in flight (before a checkpoint: what is saved must not depend on timing)."""
        for draw in self.ahead.values():
            self._completions(draw)

    def state_dict(self) -> dict[str, Any]:
        """The rounds drawn ahead, with their completions (``drain`` first): a resumed run trains exactly these."""
        self.drain()
        return {"ahead": {step: (d.prompts, d.requests, d.completions) for step, d in self.ahead.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ahead = {step: Draw(step, 0, prompts, requests, None, completions)
                      for step, (prompts, requests, completions) in state["ahead"].items()}

    def collect(self, step: int, m: dict[str, float]) -> Rollouts:
        """Generate and score groups until ``prompts_per_step`` are kept (timed per phase into ``m``). May be empty:
        every group filtered (all samples of every prompt equally rewarded) or dropped (infrastructure failures)."""
        s = self.s
        kept: list[Rollouts] = []
        in_step: set[str] = set()
        num_kept = generated = zero_variance = rounds = 0
        counts: Counter = Counter()
        staleness: Counter = Counter()
        with timed(m, "sample"):
            self.fill(step)
        while num_kept < s.prompts_per_step and rounds < (s.max_generation_rounds if s.dynamic_sampling else 1):
            with timed(m, "sample"):
                draw = self.ahead.pop(step) if rounds == 0 else self._draw(step, rounds, s.prompts_per_step - num_kept,
                                                                           in_step)
                prompts, requests = draw.prompts, draw.requests
            if not prompts:
                break  # a fixed pool with no prompt left that this step does not already have
            in_step.update(p.uid for p in prompts)
            with timed(m, "generate"):  # in asynchronous mode: the wait for samples generated while training
                completions = self._fresh(self._completions(draw), staleness)
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
            "rollout/tool_infra_dropped": float(counts["tool_infra_dropped"]),
            "filter/rounds": float(rounds),
            "filter/kept_frac": num_kept / max(1, generated),
            "filter/zero_var_frac": zero_variance / max(1, generated),
            "filter/shortfall": float(max(0, s.prompts_per_step - num_kept)),
            **staleness_metrics(staleness, s.max_staleness_steps),
        })
        return Rollouts.concat(kept) if kept else Rollouts.empty()

    def _fresh(self, completions: list[Completion], staleness: Counter) -> list[Completion]:
        """The completions at most ``max_staleness_steps`` policy versions behind the learner; older ones (possible
        only after a restart or resume) are dropped and counted as ``"dropped"`` in ``staleness``."""
        kept = []
        for c in completions:
            behind = self.rollout.version - c.policy_version
            staleness[behind if behind <= self.s.max_staleness_steps else "dropped"] += 1
            if behind <= self.s.max_staleness_steps:
                kept.append(c)
        return kept

    def verify(self, prompts: Sequence[PromptItem], requests: Sequence[GenerationRequest],
               completions: Sequence[Completion], counts: Counter) -> Rollouts:
        """Score, drop infra failures (counted), add the overlong and length penalties, feed pass rates to the prompt
        source."""
        by_uid = {p.uid: i for i, p in enumerate(prompts)}
        # A rollout a tool could not serve is not scored but dropped, like a verifier failure (counted apart).
        verdicts, c = self.verifiers.score([(x.scorable_text, prompts[by_uid[x.request_id]].gold)
                                            for x in completions])
        counts.update(c)
        pairs = [(x, v) for x, v in zip(completions, verdicts) if v is not None]
        kept = [x for x, _ in pairs]
        rewards = torch.tensor([v.reward for _, v in pairs], dtype=torch.float32)
        correct = torch.tensor([v.kind == VerdictKind.CORRECT for _, v in pairs], dtype=torch.bool)
        group_index = torch.tensor([by_uid[x.request_id] for x in kept], dtype=torch.long)
        lengths = torch.tensor([len(x.response_ids) for x in kept])
        if any(x.env_reward for x in kept):  # an environment's own rewards (multi-turn rollouts) add to the verdict
            rewards = rewards + torch.tensor([x.env_reward for x in kept], dtype=torch.float32)
        if self.s.budget_reward != "none":  # L1: the reward is correctness and meeting the prompt's stated budget
            budgets = torch.tensor([prompts[g].gold["budget_tokens"] for g in group_index.tolist()])
            rewards = (budget_reward_exact(lengths, correct, budgets, self.s.budget_reward_alpha)
                       if self.s.budget_reward == "exact" else
                       budget_reward_max(lengths, correct, budgets, self.s.budget_reward_alpha,
                                         self.s.budget_reward_delta))
        if self.s.overlong_buffer_tokens:
            rewards = rewards + self.s.overlong_penalty * overlong_penalty(
                lengths, self.s.sampling.max_response_tokens, self.s.overlong_buffer_tokens)
        if self.s.length_penalty_weight:
            rewards = rewards + (
                adaptive_length_penalty(lengths, correct, group_index, self.s.sampling.max_response_tokens,
                                        self.s.length_penalty_weight)
                if self.s.length_penalty == "alp" else
                group_length_penalty(lengths, correct, group_index, self.s.length_penalty_weight))
        parse_failed = torch.tensor([v.kind == VerdictKind.PARSE_FAIL for _, v in pairs], dtype=torch.bool)
        self.prompts.observe({p.uid: correct[group_index == i].tolist() for i, p in enumerate(prompts)})
        return Rollouts(list(prompts), list(requests), kept, rewards, correct, group_index, parse_failed)


def staleness_metrics(staleness: Counter, max_staleness_steps: int) -> dict[str, float]:
    """How many policy versions behind the learner the step's samples were: a histogram (fractions), the mean, and
    the count dropped for being older than ``max_staleness_steps``."""
    total = sum(v for k, v in staleness.items() if k != "dropped")
    out = {f"async/staleness_{j}": staleness[j] / max(1, total) for j in range(max_staleness_steps + 1)}
    out["async/staleness_mean"] = sum(j * staleness[j] for j in range(max_staleness_steps + 1)) / max(1, total)
    out["async/dropped_stale"] = float(staleness["dropped"])
    return out
