"""Held-out evaluation per mode and thinking budget (EXAONE 4.0's table): accuracy, tokens and format compliance of
each mode, and of reasoning mode under each budget with forced stops inside the engine (rlpipe.rollout.budget).

Sampling per mode as EXAONE 4.0 evaluates: reasoning mode samples (``eval.reasoning_temperature`` /
``eval.reasoning_top_p``), non-reasoning mode is greedy. Every response of a budgeted row is checked against the
budget: thinking tokens ≤ budget and response tokens ≤ budget + answer budget; a violation is counted, never hidden.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Optional, Sequence

from rlpipe.config.schema import Config
from rlpipe.driver.prompts import PromptItem, make_requests
from rlpipe.rollout.budget import ThinkTokens, forced_position, prompt_thought, thinking_tokens
from rlpipe.rollout.types import SamplingSettings
from rlpipe.verify.types import VerdictKind


def mode_sampling(cfg: Config, mode: str, budget: Optional[int]) -> SamplingSettings:
    r, e = cfg.rollout, cfg.eval
    greedy = mode == "non_reasoning"
    return SamplingSettings(temperature=0.0 if greedy else e.reasoning_temperature,
                            top_p=1.0 if greedy else e.reasoning_top_p, max_response_tokens=r.max_response_tokens,
                            thinking_budget_tokens=budget, answer_budget_tokens=r.answer_budget_tokens)


def mode_budget_rows(cfg: Config, session, tokenize: Callable[[PromptItem], list[int]],
                     heldout: Sequence[PromptItem], think: Optional[ThinkTokens]) -> list[dict[str, Any]]:
    """One row per (mode, budget): reasoning mode (and mode ``none``: a model may think by itself) without a budget
    and under each of ``eval.thinking_budgets`` (largest first); non-reasoning mode once. Budgets need the model's
    think tokens (``think``)."""
    rows = []
    for mode in sorted({p.mode for p in heldout}, key=("reasoning", "non_reasoning", "none").index):
        items = [p for p in heldout if p.mode == mode]
        budgets: list[Optional[int]] = [None]
        if mode != "non_reasoning" and think is not None:  # a task without modes may still think (Qwen3)
            budgets += sorted(set(cfg.eval.thinking_budgets), reverse=True)
        n = 1 if mode == "non_reasoning" else cfg.eval.samples_per_prompt
        for budget in budgets:
            rows.append(_row(cfg, session, tokenize, items, mode, budget, n, think))
    return rows


def _row(cfg: Config, session, tokenize, items: Sequence[PromptItem], mode: str, budget: Optional[int], n: int,
         think: Optional[ThinkTokens]) -> dict[str, Any]:
    sampling = mode_sampling(cfg, mode, budget)
    if mode == "none":
        sampling = replace(sampling, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p)
    requests = make_requests(items, tokenize, n, cfg.trainer.seed, "eval-modes", mode, budget)
    completions = session.rollout.generate(requests, sampling)
    gold = {p.uid: p.gold for p in items}
    verdicts, _ = session.verifiers.score([(c.scorable_text, gold[c.request_id]) for c in completions])
    scored = [(c, v) for c, v in zip(completions, verdicts) if v is not None]
    carried = {r.request_id: prompt_thought(r.prompt_ids, think) if think else None for r in requests}
    row: dict[str, Any] = {
        "mode": mode, "thinking_budget": budget, "samples": len(completions), "unscored": len(completions) - len(scored),
        "accuracy": _mean(v.kind == VerdictKind.CORRECT for _, v in scored),
        "format_rate": _mean(v.details.get("format_followed", v.kind != VerdictKind.PARSE_FAIL) for _, v in scored),
        "mean_tokens": _mean(len(c.response_ids) for c in completions),
        "max_tokens": max((len(c.response_ids) for c in completions), default=0),
    }
    if budget is None and scored:  # the overthinking metric: tokens by the policy's pass rate on each problem
        import torch

        from rlpipe.driver.trainer import tokens_by_difficulty

        group = {p.uid: i for i, p in enumerate(items)}
        row["tokens_by_difficulty"] = tokens_by_difficulty(
            "", torch.tensor([float(len(c.response_ids)) for c, _ in scored]),
            torch.tensor([v.kind == VerdictKind.CORRECT for _, v in scored]),
            torch.tensor([group[c.request_id] for c, _ in scored]))
    if think is not None and mode != "non_reasoning":
        thought = [thinking_tokens(c.response_ids, think, carried[c.request_id]) for c in completions]
        row["mean_thinking_tokens"] = _mean(thought)
    if budget is not None:
        limit = sampling.response_limit
        row["response_limit"] = limit
        row["forced_stops"] = sum(forced_position(c.response_ids, think, carried[c.request_id], budget) is not None
                                  for c in completions)
        row["over_budget"] = sum(t > budget for t in thought)
        row["over_limit"] = sum(len(c.response_ids) > limit for c in completions)
    return row


def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else float("nan")


def format_mode_table(rows: list[dict[str, Any]]) -> str:
    lines = ["  mode            budget  accuracy  format  mean tokens  (thinking)  max  forced  over budget/limit"]
    for r in rows:
        budget = "-" if r["thinking_budget"] is None else str(r["thinking_budget"])
        thinking = f"{r['mean_thinking_tokens']:8.1f}" if "mean_thinking_tokens" in r else " " * 8
        forced = (f"{r['forced_stops']:6d}  {r['over_budget']}/{r['over_limit']}" if "forced_stops" in r else "")
        lines.append(f"  {r['mode']:<14} {budget:>7}  {100 * r['accuracy']:7.1f}%  {100 * r['format_rate']:5.1f}%  "
                     f"{r['mean_tokens']:11.1f}  {thinking}  {r['max_tokens']:4d}  {forced}")
    for r in rows:
        if r.get("tokens_by_difficulty"):
            bins = ", ".join(f"{k.removeprefix('tokens_')} {v:.1f}" for k, v in r["tokens_by_difficulty"].items())
            lines.append(f"  mean tokens by pass rate ({r['mode']}): {bins}")
    return "\n".join(lines)


def plot_modes(rows: list[dict[str, Any]], path) -> None:
    """modes.png: accuracy against the thinking budget per mode, and mean tokens by difficulty per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlpipe.algos.length_shaping import DIFFICULTY_NAMES

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    budgeted = sorted((r for r in rows if r["mode"] == "reasoning" and r["thinking_budget"] is not None),
                      key=lambda r: r["thinking_budget"])
    if budgeted:
        axes[0].plot([r["thinking_budget"] for r in budgeted], [100 * r["accuracy"] for r in budgeted], marker="o",
                     label="reasoning, forced budget")
    for r in rows:
        if r["thinking_budget"] is None:
            axes[0].axhline(100 * r["accuracy"], linestyle="--", color="gray" if r["mode"] != "reasoning" else "C0",
                            label=f"{r['mode']}, no budget")
    axes[0].set(xlabel="thinking budget (tokens)", ylabel="accuracy (%)", title="accuracy vs thinking budget")
    axes[0].legend()
    for r in rows:
        by = r.get("tokens_by_difficulty")
        if by:
            names = [n for n in DIFFICULTY_NAMES if f"tokens_{n}" in by]
            axes[1].plot(names, [by[f"tokens_{n}"] for n in names], marker="o", label=r["mode"])
    axes[1].set(xlabel="policy pass rate on the problem (hard -> easy)", ylabel="mean response tokens",
                title="tokens by difficulty")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
