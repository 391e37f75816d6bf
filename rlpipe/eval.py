"""``rlpipe eval [hydra overrides]`` (also ``python -m rlpipe.eval``): test-time scaling of a trained policy on the held-out set.

Samples ``eval.samples_per_prompt`` candidates per held-out prompt through the rollout workers, scores them with the
verifiers, and reports pass@k (unbiased), maj@k, best-of-N by the policy's score head (XBai o4's SPRM, if the model
directory has ``score_head.pt``), the head's AUROC for correctness, and accuracy against the generation budget.
Writes ``eval.json`` and ``eval.png`` to ``eval.output_dir`` and prints a table.

    rlpipe eval model.path=outputs/run/final_model eval.samples_per_prompt=32 'eval.budgets=[16,32,64]'
"""

from __future__ import annotations

from rlpipe.process_env import set_process_defaults

set_process_defaults()  # before torch / ray / vllm are imported

import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Optional  # noqa: E402

import torch  # noqa: E402

from rlpipe.config.compose import hydra_command  # noqa: E402
from rlpipe.config.schema import Config  # noqa: E402
from rlpipe.verify.types import Verdict, VerdictKind  # noqa: E402

log = logging.getLogger("rlpipe")


def evaluate(cfg: Config) -> dict[str, Any]:
    from dataclasses import replace

    from rlpipe.algos.metrics import auroc, best_of_n, majority_at_k, pass_at_k, within_question_auroc
    from rlpipe.driver import build
    from rlpipe.driver.collect import Rollouts
    from rlpipe.driver.inputs import check_context_length, check_model_dir, load_prompts
    from rlpipe.driver.prompts import make_requests
    from rlpipe.driver.session import LearnerSpec, Session
    from rlpipe.learner.score_head import saved_score_head

    e = cfg.eval
    start = time.time()
    model_path = check_model_dir(build.model_dir(cfg), "model.path")
    tokenize, _, heldout = load_prompts(cfg, model_path)
    budgets = sorted(set(e.budgets)) or [cfg.rollout.max_response_tokens]
    max_tokens = max(budgets)
    n = e.samples_per_prompt
    check_context_length(model_path, cfg, max_tokens)
    head = saved_score_head(model_path)
    # One learner rank, no reference: it only scores candidates with the head saved beside the model.
    learner = LearnerSpec(num_ranks=1, with_reference=False, heads=[("sprm", head)]) if head is not None else None
    with Session(cfg, model_path, learner=learner, max_response_tokens=max_tokens) as session:
        requests = make_requests(heldout, tokenize, n, cfg.trainer.seed, "eval")
        gen_start = time.time()
        # Per-request seeds: a smaller budget would have produced a prefix of the same sample, so one generation at
        # the largest budget serves every budget (a sample longer than a budget counts as unfinished there).
        completions = session.rollout.generate(requests, replace(build.sampling_settings(cfg),
                                                                 max_response_tokens=max_tokens))
        gen_seconds = time.time() - gen_start
        gold = {p.uid: p.gold for p in heldout}
        verdicts, counts = session.verifiers.score([(c.scorable_text, gold[c.request_id]) for c in completions])
        correct_flat = torch.tensor([v is not None and v.kind == VerdictKind.CORRECT for v in verdicts])
        scores, head_seconds = None, None
        if session.learner is not None:
            session.learner.load_head_exports(model_path)
            group = {p.uid: i for i, p in enumerate(heldout)}
            candidates = Rollouts(list(heldout), requests, completions, torch.zeros(len(completions)), correct_flat,
                                  torch.tensor([group[c.request_id] for c in completions]),
                                  torch.tensor([v is not None and v.kind == VerdictKind.PARSE_FAIL for v in verdicts]))
            out = session.learner.prepare(candidates, torch.ones(len(completions), dtype=torch.bool))
            scores, head_seconds = out["sprm_scores"], float(out["head_seconds"].sum())
        mode_rows = None
        if any(p.mode != "none" for p in heldout) or e.thinking_budgets:
            from transformers import AutoTokenizer

            from rlpipe.driver.mode_eval import mode_budget_rows
            from rlpipe.rollout.budget import ThinkTokens

            think = ThinkTokens.of(AutoTokenizer.from_pretrained(model_path))
            if e.thinking_budgets and think is None:
                log.warning("eval.thinking_budgets: the model has no <think> / </think> tokens; no budget sweep")
            mode_rows = mode_budget_rows(cfg, session, tokenize, heldout, think)

    q = len(heldout)
    correct = correct_flat.view(q, n)
    lengths = torch.tensor([len(c.response_ids) for c in completions]).view(q, n)
    answers = [[_answer(v) for v in verdicts[i * n:(i + 1) * n]] for i in range(q)]
    result: dict[str, Any] = {
        "model_path": model_path, "prompts": q, "samples_per_prompt": n, "temperature": cfg.rollout.temperature,
        "unscored_samples": counts["dropped"], "generate_seconds": round(gen_seconds, 1),
        "pass@k": {k: _mean(pass_at_k(n, int(c), k) for c in correct.sum(1)) for k in e.pass_k if k <= n},
        "maj@k": {k: majority_at_k(answers, correct, k) for k in e.maj_k if k <= n},
        # A sample needing more tokens than the budget would have been cut off there: correct only if it fits.
        "accuracy_by_budget": {b: float((correct & (lengths <= b)).float().mean()) for b in budgets},
    }
    # A reference for the head: the policy's own confidence (mean sampled-token logprob), which costs nothing.
    def best_of_n_by(score: torch.Tensor) -> dict[int, float]:
        return {k: best_of_n(score, correct, k) for k in e.best_of if k <= n}

    confidence = torch.tensor([mean_sampled_logprob(c) for c in completions]).view(q, n)
    result["best_of_n_by_confidence"] = best_of_n_by(confidence)
    result["confidence_auroc_within_question"] = within_question_auroc(confidence, correct)
    if scores is not None:
        s = scores.view(q, n)
        result["best_of_n_by_head"] = best_of_n_by(s)
        result["head_auroc"] = auroc(scores, correct.flatten())
        result["head_auroc_within_question"] = within_question_auroc(s, correct)
        result["head_ms_per_candidate"] = 1000 * head_seconds / len(completions)
    if mode_rows is not None:
        result["by_mode_and_budget"] = mode_rows
    result["wall_seconds"] = round(time.time() - start, 1)
    out_dir = Path(e.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(result, indent=2))
    _plot(result, out_dir / "eval.png")
    if mode_rows is not None:
        from rlpipe.driver.mode_eval import plot_modes

        plot_modes(mode_rows, out_dir / "modes.png")
    print(format_table(result), flush=True)
    print(f"outputs: {out_dir.resolve()}/ (eval.json, eval.png{', modes.png' if mode_rows is not None else ''})")
    return result


def _answer(verdict: Optional[Verdict]) -> Optional[str]:
    """The extracted answer a majority vote counts (None: no answer, never wins)."""
    if verdict is None or verdict.kind == VerdictKind.PARSE_FAIL:
        return None
    value = verdict.details.get("parsed", verdict.details.get("extracted"))
    return None if value is None else str(value)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def format_table(r: dict[str, Any]) -> str:
    lines = [f"rlpipe eval: {r['prompts']} prompts x {r['samples_per_prompt']} samples (T={r['temperature']}), "
             f"{r['wall_seconds']:.0f} s"]
    for k, v in r["pass@k"].items():
        lines.append(f"  pass@{k:<3} {100 * v:6.1f}%")
    for k, v in r["maj@k"].items():
        lines.append(f"  maj@{k:<4} {100 * v:6.1f}%")
    for k, v in r.get("best_of_n_by_head", {}).items():
        lines.append(f"  best-of-{k:<3} by head {100 * v:6.1f}%")
    for k, v in r["best_of_n_by_confidence"].items():
        lines.append(f"  best-of-{k:<3} by policy confidence {100 * v:6.1f}%")
    lines.append(f"  policy confidence (mean token logprob) AUROC within a question "
                 f"{r['confidence_auroc_within_question']:.3f}")
    if "head_auroc" in r:
        lines.append(f"  head AUROC (correctness) {r['head_auroc']:.3f} pooled, {r['head_auroc_within_question']:.3f} "
                     f"within a question; head adds {r['head_ms_per_candidate']:.2f} ms per candidate on top of the "
                     f"forward pass")
    for b, v in r["accuracy_by_budget"].items():
        lines.append(f"  accuracy within {b:>5} tokens {100 * v:6.1f}%")
    if "by_mode_and_budget" in r:
        from rlpipe.driver.mode_eval import format_mode_table

        lines.append("by mode and thinking budget (reasoning: sampled; non-reasoning: greedy; budgets forced in the "
                     "engine):")
        lines.append(format_mode_table(r["by_mode_and_budget"]))
    return "\n".join(lines)


def _plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    budgets = list(r["accuracy_by_budget"])
    axes[0].plot(budgets, [100 * v for v in r["accuracy_by_budget"].values()], marker="o")
    axes[0].set(xlabel="generation budget (max response tokens)", ylabel="accuracy (%)", title="accuracy vs budget")
    if "best_of_n_by_head" in r:
        ns = list(r["best_of_n_by_head"])
        axes[1].plot(ns, [100 * v for v in r["best_of_n_by_head"].values()], marker="o", label="best-of-N by head")
    ns = list(r["best_of_n_by_confidence"])
    axes[1].plot(ns, [100 * v for v in r["best_of_n_by_confidence"].values()], marker="s", linestyle=":",
                 label="best-of-N by policy confidence")
    axes[1].set_xscale("log", base=2)
    if 1 in r["pass@k"]:
        axes[1].axhline(100 * r["pass@k"][1], color="gray", linestyle="--", label="pass@1")
    for k, v in r["maj@k"].items():
        axes[1].scatter([k], [100 * v], color="tab:orange", label=f"maj@{k}")
    axes[1].set(xlabel="N candidates", ylabel="accuracy (%)", title="test-time scaling")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def mean_sampled_logprob(c) -> float:
    """The mean logprob of the tokens the model sampled (a multi-turn rollout's inserted tool tokens, logprob 0,
    would otherwise raise the confidence of every rollout that called a tool)."""
    if c.token_mask is None:
        return sum(c.logprobs) / max(1, len(c.logprobs))
    sampled = [lp for lp, own in zip(c.logprobs, c.token_mask) if own]
    return sum(sampled) / max(1, len(sampled))


main = hydra_command("rlpipe eval", lambda cfg, resolved: evaluate(cfg))

if __name__ == "__main__":
    main()
