"""Which free per-token statistic of the policy's own forward pass ranks a question's sampled answers best? The ceiling
a head reading those statistics starts from (docs/sprm.md, the dense head).

    .venv/bin/python bench/confidence_stats.py --model RUN/final_model [--questions 128] [--samples 32]

vLLM samples ``--samples`` answers at T = 1 for each of the first ``--questions`` held-out questions of the default
task; a transformers forward of the same model gives, per response token, the sampled token's logprob and the most
likely token's; the arithmetic verifier labels each answer. Printed: the within-question AUROC (rlpipe.algos.metrics)
of the mean, sum and minimum sampled-token logprob and of the mean and minimum margin to the most likely token.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--questions", type=int, default=128)
    ap.add_argument("--samples", type=int, default=32)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import torch
    from transformers import AutoModelForCausalLM

    from rlpipe.algos.metrics import within_question_auroc
    from rlpipe.config.compose import load_config
    from rlpipe.driver.inputs import load_prompts
    from rlpipe.driver.prompts import make_requests
    from rlpipe.rollout.types import SamplingSettings
    from rlpipe.rollout.vllm_engine import VLLMEngine
    from rlpipe.verify.arithmetic import ArithmeticVerifier
    from rlpipe.verify.types import VerdictKind

    q, s = args.questions, args.samples
    cfg = load_config([f"model.path={args.model}"])
    tokenize, _, heldout = load_prompts(cfg, args.model)
    heldout = heldout[:q]
    engine = VLLMEngine(args.model, seed=0, max_model_len=cfg.data.max_prompt_tokens + cfg.rollout.max_response_tokens)
    requests = make_requests(heldout, tokenize, s, 0, "confidence_stats")
    completions = engine.generate(requests, SamplingSettings.unforced(temperature=1.0, top_p=1.0,
                                                                      max_response_tokens=cfg.rollout.max_response_tokens))
    engine.shutdown()
    verifier = ArithmeticVerifier()
    golds = [p.gold for p in heldout for _ in range(s)]
    correct = torch.tensor([verifier.score(c.text, g).kind == VerdictKind.CORRECT for c, g in zip(completions, golds)])
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    stats: dict[str, list[torch.Tensor]] = {k: [] for k in ("mean logprob", "sum logprob", "min logprob",
                                                               "mean margin to the top token", "min margin")}
    with torch.no_grad():
        for request, c in zip([r for r in requests for _ in range(s)], completions):
            ids = torch.tensor([list(request.prompt_ids) + list(c.response_ids)])
            logp = torch.log_softmax(model(ids).logits[0, len(request.prompt_ids) - 1:-1].float(), dim=-1)
            lp = logp.gather(-1, torch.tensor(c.response_ids)[:, None]).squeeze(-1)
            margin = lp - logp.amax(dim=-1)
            for key, value in zip(stats, (lp.mean(), lp.sum(), lp.min(), margin.mean(), margin.min())):
                stats[key].append(value)
    print(f"{args.model}: {q} questions x {s} samples, pass@1 {100 * float(correct.float().mean()):.1f}%\n")
    print("| statistic | within-question AUROC |\n|---|---|")
    for key, values in stats.items():
        print(f"| {key} | {within_question_auroc(torch.stack(values).view(q, s), correct.view(q, s)):.3f} |")


if __name__ == "__main__":
    main()
