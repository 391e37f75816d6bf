"""Diagnostic: can the score head learn "this answer is wrong" on the default task when the backbone may adapt?

Samples candidates from a trained policy once (vLLM; 1024 train questions x 8, the 256 held-out questions x 16,
cached in --cache), then trains a copy of the backbone + a head offline on the train questions' candidates (no
policy loss: the head's best case) and reports the head's pooled and within-question AUROC and best-of-8 on the
held-out questions as training goes. Variants (--variants, separated by |): "outcome" (the outcome label on every
step), "outcome, filter" (with the paper's agreement filter, from step --filter-after on), "true steps" (each step's
own arithmetic checked: an upper bound for what the outcome-trained head could find). --backbone-lr 0 freezes the
backbone; --head block puts one causal self-attention block under the paper's MLP.

    .venv/bin/python bench/sprm_finetune.py --model outputs/bench_sprm/no_head/final_model [--steps 300]
"""

from __future__ import annotations

import argparse
import copy

import torch

from rlpipe.algos.sprm import scale_grad, sprm_loss, trajectory_scores
from rlpipe.learner.score_head import ScoreHead

from sprm_candidates import TEST_SAMPLES, batchify, candidates, delimiter_ids, report, step_labels


class BlockHead(torch.nn.Module):
    """One causal self-attention block over the response's hidden states, then the paper's MLP."""

    def __init__(self, h, dropout):
        super().__init__()
        self.block = torch.nn.TransformerEncoderLayer(h, 4, 2 * h, dropout=0.0, batch_first=True, norm_first=True)
        self.mlp = ScoreHead(h, dropout)

    def forward(self, x):
        t = x.shape[1]
        causal = torch.triu(torch.full((t, t), float("-inf")), 1)
        return self.mlp(self.block(x, src_mask=causal))


def run_variant(name, base, items_tr, items_te, pad_id, delim, n_test, args):
    torch.manual_seed(0)
    model = copy.deepcopy(base).train()
    head = ScoreHead(model.config.hidden_size, args.dropout) if args.head == "mlp" else BlockHead(
        model.config.hidden_size, args.dropout)
    groups = [{"params": head.parameters(), "lr": args.head_lr}]
    if args.backbone_lr > 0:
        groups.append({"params": model.parameters(), "lr": args.backbone_lr})
    else:
        model.requires_grad_(False)
    opt = torch.optim.AdamW(groups)
    g = torch.Generator().manual_seed(0)
    c = torch.tensor([x["correct"] for x in items_te]).view(-1, n_test)

    def evaluate(step):
        model.eval()
        head.eval()
        scores = []
        with torch.no_grad():
            for i in range(0, len(items_te), 512):
                ids, att, pos, p, mask = batchify(items_te[i:i + 512], pad_id, delim)
                h = model(input_ids=ids, attention_mask=att, position_ids=pos,
                          output_hidden_states=True).hidden_states[args.layer]
                scores.append(trajectory_scores(head(h[:, p:]), mask))
        s = torch.cat(scores).view(-1, n_test)
        model.train()
        head.train()
        print(f"  {report(f'{name} step {step}', s, c)} (pass@1 {c.float().mean():.3f})", flush=True)

    for step in range(1, args.steps + 1):
        idx = torch.randperm(len(items_tr), generator=g)[:args.batch].tolist()
        items = [items_tr[i] for i in idx]
        ids, att, pos, p, mask = batchify(items, pad_id, delim)
        h = model(input_ids=ids, attention_mask=att, position_ids=pos, output_hidden_states=True).hidden_states
        logits = head(scale_grad(h[args.layer][:, p:], args.grad_scale))
        if name == "true steps":
            lab = step_labels(items, mask)
            keep = mask & (lab >= 0)
            y = lab[keep]
            pw = (1 - y).sum() / y.sum().clamp(min=1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[keep], y, pos_weight=pw)
        else:
            y = torch.tensor([float(x["correct"]) for x in items])
            loss, _ = sprm_loss(logits, mask, y, 1.0, name == "outcome, filter" and step > args.filter_after)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.eval_every == 0:
            evaluate(step)


def main() -> None:
    from transformers import AutoModelForCausalLM

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--cache", default="outputs/sprm_exp/candidates.pt")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--layer", type=int, default=-1)
    ap.add_argument("--grad-scale", type=float, default=1.0)
    ap.add_argument("--backbone-lr", type=float, default=1e-4)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--head", default="mlp", choices=["mlp", "block"])
    ap.add_argument("--filter-after", type=int, default=0, help="head updates without the filter first")
    ap.add_argument("--variants", default="true steps|outcome|outcome, filter")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tr, te, pad_id = candidates(args.model, args.cache)
    print(f"train {len(tr)} candidates (acc {sum(x['correct'] for x in tr) / len(tr):.3f}), test {len(te)}")
    base = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    for name in args.variants.split("|"):
        print(name, flush=True)
        run_variant(name, base, tr, te, pad_id, delimiter_ids(args.model), TEST_SAMPLES, args)


if __name__ == "__main__":
    main()
