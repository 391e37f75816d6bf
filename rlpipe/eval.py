"""``rlpipe eval [hydra overrides]`` (also ``python -m rlpipe.eval``): test-time scaling of a trained policy on the held-out set.

Samples ``eval.samples_per_prompt`` candidates per held-out prompt through the rollout workers, scores them with the
verifiers, and reports pass@k (unbiased), maj@k, best-of-N by each score head saved beside the model (XBai o4's step
head, ``score_head.pt``; the dense head, ``dense_score_head.pt``) and by the policy's own confidence (the free
baseline a head must beat), each one's AUROC for correctness, the heads' cost next to the forward pass, and accuracy
against the generation budget.
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
HEAD_KEYS = {"sprm": "head", "dense_prm": "dense_head"}  # a head's name -> its keys in eval.json
HEAD_LABELS = {"head": "step head", "dense_head": "dense head"}


def evaluate(cfg: Config) -> dict[str, Any]:
    from dataclasses import replace

    from rlpipe.algos.metrics import auroc, best_of_n, majority_at_k, pass_at_k, within_question_auroc
    from rlpipe.driver import build
    from rlpipe.driver.collect import Rollouts
    from rlpipe.driver.inputs import check_context_length, check_model_dir, load_prompts
    from rlpipe.driver.prompts import make_requests
    from rlpipe.driver.session import LearnerSpec, Session
    from rlpipe.learner.dense_head import saved_dense_head
    from rlpipe.learner.score_head import saved_score_head

    e = cfg.eval
    start = time.time()
    model_path = check_model_dir(build.model_dir(cfg), "model.path")
    tokenize, _, heldout = load_prompts(cfg, model_path)
    budgets = sorted(set(e.budgets)) or [cfg.rollout.max_response_tokens]
    max_tokens = max(budgets)
    n = e.samples_per_prompt
    check_context_length(model_path, cfg, max_tokens)
    heads = [(kind, settings) for kind, settings in [("sprm", saved_score_head(model_path)),
                                                     ("dense_prm", saved_dense_head(model_path))] if settings]
    # One learner rank, no reference: it only scores candidates with the heads saved beside the model.
    learner = LearnerSpec(num_ranks=1, with_reference=False, heads=heads) if heads else None
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
        prepared = None
        if session.learner is not None:
            session.learner.load_head_exports(model_path)
            group = {p.uid: i for i, p in enumerate(heldout)}
            candidates = Rollouts(list(heldout), requests, completions, torch.zeros(len(completions)), correct_flat,
                                  torch.tensor([group[c.request_id] for c in completions]),
                                  torch.tensor([v is not None and v.kind == VerdictKind.PARSE_FAIL for v in verdicts]))
            prepared = session.learner.prepare(candidates, torch.ones(len(completions), dtype=torch.bool))
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

    confidence = torch.tensor([c.confidence for c in completions]).view(q, n)
    result["best_of_n_by_confidence"] = best_of_n_by(confidence)
    result["confidence_auroc_within_question"] = within_question_auroc(confidence, correct)
    lowest = torch.tensor([min_sampled_logprob(c) for c in completions]).view(q, n)  # the dense head's min prior
    result["best_of_n_by_min_logprob"] = best_of_n_by(lowest)
    result["min_logprob_auroc_within_question"] = within_question_auroc(lowest, correct)
    if prepared is not None:
        result["forward_ms_per_candidate"] = 1000 * float(prepared["forward_seconds"].sum()) / len(completions)
        for name, prefix in HEAD_KEYS.items():
            if f"{name}_scores" not in prepared:
                continue
            s = prepared[f"{name}_scores"].view(q, n)
            result[f"best_of_n_by_{prefix}"] = best_of_n_by(s)
            result[f"{prefix}_auroc"] = auroc(s, correct)
            result[f"{prefix}_auroc_within_question"] = within_question_auroc(s, correct)
            ms = 1000 * float(prepared[f"{name}_seconds"].sum()) / len(completions)
            result[f"{prefix}_ms_per_candidate"] = ms
            result[f"{prefix}_cost_frac_of_forward"] = ms / max(1e-9, result["forward_ms_per_candidate"])
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
    for prefix, label in HEAD_LABELS.items():
        for k, v in r.get(f"best_of_n_by_{prefix}", {}).items():
            lines.append(f"  best-of-{k:<3} by {label} {100 * v:6.1f}%")
    for k, v in r["best_of_n_by_confidence"].items():
        lines.append(f"  best-of-{k:<3} by policy confidence {100 * v:6.1f}%")
    for k, v in r["best_of_n_by_min_logprob"].items():
        lines.append(f"  best-of-{k:<3} by lowest token logprob {100 * v:6.1f}%")
    lines.append(f"  policy confidence (mean token logprob) AUROC within a question "
                 f"{r['confidence_auroc_within_question']:.3f}; lowest token logprob "
                 f"{r['min_logprob_auroc_within_question']:.3f}")
    for prefix, label in HEAD_LABELS.items():
        if f"{prefix}_auroc" in r:
            lines.append(f"  {label} AUROC (correctness) {r[f'{prefix}_auroc']:.3f} pooled, "
                         f"{r[f'{prefix}_auroc_within_question']:.3f} within a question; it adds "
                         f"{r[f'{prefix}_ms_per_candidate']:.3f} ms per candidate to a forward pass of "
                         f"{r['forward_ms_per_candidate']:.3f} ms ({100 * r[f'{prefix}_cost_frac_of_forward']:.2f}%)")
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
    for prefix, label in HEAD_LABELS.items():
        if f"best_of_n_by_{prefix}" in r:
            ns = list(r[f"best_of_n_by_{prefix}"])
            axes[1].plot(ns, [100 * v for v in r[f"best_of_n_by_{prefix}"].values()], marker="o",
                         label=f"best-of-N by {label}")
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


def min_sampled_logprob(c) -> float:
    """The lowest logprob among the tokens the model sampled (0 for an empty response)."""
    return min(c.sampled_logprobs, default=0.0)


main = hydra_command("rlpipe eval", lambda cfg, resolved: evaluate(cfg))

if __name__ == "__main__":
    main()
