"""Diagnostic for XBai o4's score head on the default task: does a *frozen* backbone carry "this answer is wrong"?

On candidates sampled once from a trained policy (bench/sprm_candidates.py), trains heads offline on the frozen
hidden states of every layer at the scored positions (training-stream questions) and reports on the held-out
questions: a probe trained on the *true* step labels (is this step's arithmetic right? — what an outcome-trained head
could at best find), and the paper's outcome-trained head with and without the agreement filter; next to them the
policy's own confidence (mean / min sampled-token logprob).

    .venv/bin/python bench/sprm_probe.py --model outputs/bench_sprm/no_head/final_model
"""

from __future__ import annotations

import argparse

import torch

from rlpipe.algos.metrics import auroc
from rlpipe.algos.sprm import sprm_loss, trajectory_scores
from rlpipe.learner.score_head import ScoreHead

from sprm_candidates import TEST_SAMPLES, batchify, candidates, delimiter_ids, report, step_labels, step_truth

MAX_STEPS = 16  # the default task has 2-3 worked steps; a rambling candidate may have a few more


@torch.no_grad()
def scored_features(model, items, pad_id, delim):
    """([L+1, N, S, H] hidden states of every layer at the scored positions (S = MAX_STEPS; zero-padded),
    [N, S] mask, [N, S] true step labels)."""
    feats, masks, labels = [], [], []
    for i in range(0, len(items), 512):
        chunk = items[i:i + 512]
        ids, att, pos, p, mask = batchify(chunk, pad_id, delim)
        hidden = torch.stack(model(input_ids=ids, attention_mask=att, position_ids=pos,
                                   output_hidden_states=True).hidden_states)[:, :, p:]  # [L+1, B, T, H]
        lab = step_labels(chunk, mask)
        if int(mask.sum(1).max()) > MAX_STEPS:
            raise ValueError(f"a candidate has more than {MAX_STEPS} scored steps; raise MAX_STEPS")
        # move each row's scored positions to the front: [B, S]
        order = torch.argsort((~mask).float(), dim=1, stable=True)[:, :MAX_STEPS]
        feats.append(hidden.gather(2, order[None, :, :, None].expand(hidden.shape[0], -1, -1, hidden.shape[-1])))
        masks.append(mask.gather(1, order))
        labels.append(lab.gather(1, order))
    feats, masks, labels = torch.cat(feats, 1), torch.cat(masks), torch.cat(labels)
    s = int(masks.sum(1).max())  # trim to the most steps any candidate has
    return feats[:, :, :s], masks[:, :s], labels[:, :s]


def fit(x, mask, loss_fn, steps, lr, dropout):
    torch.manual_seed(0)
    head = ScoreHead(x.shape[-1], dropout)
    opt = torch.optim.AdamW(head.parameters(), lr=lr)
    for _ in range(steps):
        loss = loss_fn(head(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


def main() -> None:
    from transformers import AutoModelForCausalLM

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--cache", default="outputs/sprm_exp/candidates.pt")
    ap.add_argument("--head-steps", type=int, default=300, help="full-batch AdamW steps per head")
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    train, test, pad_id = candidates(args.model, args.cache)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    delim = delimiter_ids(args.model)
    c = torch.tensor([x["correct"] for x in test]).view(-1, TEST_SAMPLES)
    q = c.shape[0]
    mixed = int(((c.sum(1) > 0) & (c.sum(1) < TEST_SAMPLES)).sum())
    wrong = [x["text"] for x in test if not x["correct"]]
    slips = sum(1 for t in wrong if not all(step_truth(t)))
    print(f"held-out: {q} questions x {TEST_SAMPLES}, pass@1 {c.float().mean():.3f}, {mixed} questions with both "
          f"outcomes; {len(wrong)} wrong candidates, {slips} of them with an arithmetic slip in a step")
    for name, fn in (("mean token logprob", torch.mean), ("min token logprob", torch.min)):
        s = torch.tensor([float(fn(x["logprobs"])) for x in test]).view(q, TEST_SAMPLES)
        print(report(f"policy confidence ({name})", s, c))

    f_tr, m_tr, lab_tr = scored_features(model, train, pad_id, delim)
    f_te, m_te, lab_te = scored_features(model, test, pad_id, delim)
    y_tr = torch.tensor([float(x["correct"]) for x in train])
    for layer in range(1, f_tr.shape[0]):  # layer 0 is the embedding: the scored token is always "."
        x_tr, x_te = f_tr[layer], f_te[layer]
        known = lab_tr >= 0
        pos_weight = (1 - lab_tr[known]).sum() / lab_tr[known].sum().clamp(min=1)

        def true_step_loss(logits):
            return torch.nn.functional.binary_cross_entropy_with_logits(logits[known], lab_tr[known],
                                                                        pos_weight=pos_weight)

        probe = fit(x_tr, m_tr, true_step_loss, args.head_steps, args.lr, 0.0)
        with torch.no_grad():
            logits = probe(x_te)
            line = (f"layer {layer}: true-step probe: step AUROC {auroc(logits[lab_te >= 0], lab_te[lab_te >= 0]):.3f}"
                    f", {report('as trajectory score', trajectory_scores(logits, m_te).view(q, -1), c)}")
        for filt in (True, False):
            head = fit(x_tr, m_tr, lambda lg: sprm_loss(lg, m_tr, y_tr, 1.0, filt)[0], args.head_steps, args.lr, 0.5)
            with torch.no_grad():
                s = trajectory_scores(head(x_te), m_te).view(q, -1)
            line += " | " + report(f"outcome head, filter {'on' if filt else 'off'}", s, c)
        print(line, flush=True)


if __name__ == "__main__":
    main()
