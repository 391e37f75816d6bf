"""The score head's share of an update: the backbone sees the head's gradient scaled by grad_scale (forward values
unchanged), the head itself learns at full strength, and its trajectory scores are geometric means over steps."""

import torch

from rlpipe.learner.batch import build_batch
from rlpipe.learner.heads import Forward
from rlpipe.learner.score_head import ScoreHeadSettings, ScoreHeadTrainer

D = 9


def _settings(**overrides) -> ScoreHeadSettings:
    base = dict(delimiter_ids=(D,), think_start_id=None, think_end_id=None, layer=-2, lr=1e-5, grad_scale=1e-4,
                positive_weight=1.0, coef=1.0, dropout=0.5, agreement_filter=True, exclude_format_failures=True)
    return ScoreHeadSettings(**{**base, **overrides})


def _batch():
    batch = build_batch([[1, 2], [3]], [[4, 5, D, 6, D], [7, D, 8]], [[0.0] * 5, [0.0] * 3], pad_id=0)
    batch.outcome = torch.tensor([1.0, 0.0])
    batch.format_ok = torch.tensor([True, True])
    return batch


def _forward(hidden):
    return Forward(torch.zeros(2, 5), None, {-2: hidden})


def _grads(scale: float):
    torch.manual_seed(0)
    head = ScoreHeadTrainer(4, _settings(grad_scale=scale, dropout=0.0), torch.device("cpu"), seed=0)
    batch = _batch()
    hidden = torch.randn(2, batch.response_mask.shape[1], 4, requires_grad=True)  # at the response positions
    loss, metrics = head.loss(_forward(hidden), batch)
    loss.backward()
    return hidden.grad, [p.grad.clone() for p in head.head.parameters()], float(loss), metrics


def test_backbone_gradient_is_scaled_and_the_head_gradient_is_not():
    g_scaled, head_scaled, loss_scaled, _ = _grads(1e-4)
    g_full, head_full, loss_full, _ = _grads(1.0)
    assert loss_scaled == loss_full  # the forward is unchanged
    assert g_full.abs().sum() > 0
    torch.testing.assert_close(g_scaled, 1e-4 * g_full)
    for a, b in zip(head_scaled, head_full):
        torch.testing.assert_close(a, b)


def test_scores_cover_the_scored_steps_only():
    head = ScoreHeadTrainer(4, _settings(), torch.device("cpu"), seed=0)
    batch = _batch()
    hidden = torch.randn(2, batch.response_mask.shape[1], 4)
    scores = head.scores(_forward(hidden), batch)
    head.head.eval()  # dropout off, as scoring does
    logits, mask = head.step_logits(hidden, batch)
    head.head.train()
    assert mask.sum(1).tolist() == [2, 1]  # "5" and "6" end steps in row 0; "7" in row 1
    expected0 = torch.sigmoid(logits[0][mask[0]]).prod().sqrt()
    torch.testing.assert_close(scores[0], expected0)
    assert head.head.training  # scoring switched dropout off only for itself


def test_format_failures_are_left_out_of_the_labels_when_so_configured():
    batch = _batch()
    batch.format_ok = torch.tensor([True, False])
    kept = ScoreHeadTrainer(4, _settings(), torch.device("cpu"), seed=0).labels(batch)
    assert kept.tolist() == [1.0, -1.0]
    assert ScoreHeadTrainer(4, _settings(exclude_format_failures=False), torch.device("cpu"), seed=0).labels(
        batch).tolist() == [1.0, 0.0]
