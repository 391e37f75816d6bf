"""The score head's share of an update: the backbone sees the head's gradient scaled by grad_scale (forward values
unchanged), the head itself learns at full strength, and its trajectory scores are geometric means over steps."""

import torch

from rlpipe.learner.batch import build_batch
from rlpipe.learner.score_head import ScoreHeadSettings, ScoreHeadTrainer

D = 9


def _batch():
    batch = build_batch([[1, 2], [3]], [[4, 5, D, 6, D], [7, D, 8]], [[0.0] * 5, [0.0] * 3], pad_id=0)
    batch.sprm_labels = torch.tensor([1.0, 0.0])
    return batch


def _grads(scale: float):
    torch.manual_seed(0)
    head = ScoreHeadTrainer(4, ScoreHeadSettings(delimiter_ids=(D,), grad_scale=scale, dropout=0.0),
                            torch.device("cpu"), seed=0)
    batch = _batch()
    hidden = torch.randn(2, batch.input_ids.shape[1], 4, requires_grad=True)
    loss, metrics = head.loss(hidden, batch)
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
    head = ScoreHeadTrainer(4, ScoreHeadSettings(delimiter_ids=(D,)), torch.device("cpu"), seed=0)
    batch = _batch()
    hidden = torch.randn(2, batch.input_ids.shape[1], 4)
    scores = head.scores(hidden, batch)
    head.head.eval()  # dropout off, as scoring does
    logits, mask = head.step_logits(hidden, batch)
    head.head.train()
    assert mask.sum(1).tolist() == [2, 1]  # "5" and "6" end steps in row 0; "7" in row 1
    expected0 = torch.sigmoid(logits[0][mask[0]]).prod().sqrt()
    torch.testing.assert_close(scores[0], expected0)
    assert head.head.training  # scoring switched dropout off only for itself
