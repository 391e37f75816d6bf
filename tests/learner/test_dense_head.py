"""The dense score head's share of an update: it starts as the policy's own confidence, every input reaches the
backbone through grad_scale, it learns from outcome labels, and it round-trips through its export."""

import pytest
import torch

from rlpipe.learner.batch import build_batch
from rlpipe.learner.dense_head import DenseHeadSettings, DenseHeadTrainer, saved_dense_head
from rlpipe.learner.heads import Forward, build_heads

D = 9
H = 6


def _settings(**overrides) -> DenseHeadSettings:
    base = dict(delimiter_ids=(D,), think_start_id=None, think_end_id=None, layer=-2, lr=1e-2, grad_scale=1e-4,
                positive_weight=1.0, coef=1.0, dropout=0.0, agreement_filter=False, exclude_format_failures=True,
                pooling="min", width=4, features=("hidden", "logprob", "top_logprob", "entropy"))
    return DenseHeadSettings(**{**base, **overrides})


def _batch():
    batch = build_batch([[1, 2], [3]], [[4, 5, D, 6, D], [7, D, 8]], [[0.0] * 5, [0.0] * 3], pad_id=0)
    batch.outcome = torch.tensor([1.0, 0.0])
    batch.format_ok = torch.tensor([True, True])
    return batch


def _forward(batch, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    n, t = batch.response_mask.shape
    logprobs = (-torch.rand(n, t, generator=g) * 3).masked_fill(~batch.response_mask, 0.0)
    entropy = torch.rand(n, t, generator=g)
    hidden = torch.randn(n, t, H, generator=g)  # at the response positions
    top = torch.maximum(logprobs, -torch.rand(n, t, generator=g)).masked_fill(~batch.response_mask, 0.0)
    for x in (logprobs, entropy, hidden, top):
        x.requires_grad_(requires_grad)
    return Forward(logprobs, entropy, {-2: hidden}, top)


@pytest.mark.parametrize("pooling", ["min", "mean", "attention"])
def test_a_fresh_head_scores_as_the_policys_confidence(pooling):
    """Before training the token logit is the sampled token's logprob: min pooling gives the lowest token logprob,
    attention (equal weights) the mean, mean the mean of the step means."""
    batch = _batch()
    fwd = _forward(batch)
    head = DenseHeadTrainer(H, _settings(pooling=pooling), torch.device("cpu"), seed=0)
    scores = head.scores(fwd, batch)
    lp0, lp1 = fwd.logprobs[0, :5], fwd.logprobs[1, :3]
    expected = {"min": [lp0.min(), lp1.min()], "attention": [lp0.mean(), lp1.mean()],
                # row 0: steps {0,1}, {2,3}, {4} (step ends before each delimiter D); row 1: {0}, {1,2}
                "mean": [(lp0[:2].mean() + lp0[2:4].mean() + lp0[4]) / 3, (lp1[0] + lp1[1:].mean()) / 2]}[pooling]
    torch.testing.assert_close(scores, torch.sigmoid(torch.stack(expected)))


def test_every_input_reaches_the_backbone_scaled_and_the_head_learns_at_full_strength():
    def grads(scale):
        batch = _batch()
        fwd = _forward(batch, requires_grad=True)
        head = DenseHeadTrainer(H, _settings(grad_scale=scale, pooling="attention"), torch.device("cpu"), seed=0)
        with torch.no_grad():  # leave the zero start so the hidden, entropy and top paths carry a gradient
            head.module.out.weight.normal_(generator=torch.Generator().manual_seed(1))
        loss, metrics = head.loss(fwd, batch)
        loss.backward()
        inputs = [fwd.logprobs.grad, fwd.entropy.grad, fwd.hidden[-2].grad, fwd.top_logprobs.grad]
        return inputs, [p.grad.clone() for p in head.module.parameters()], float(loss.detach()), metrics

    scaled, head_scaled, loss_scaled, metrics = grads(1e-4)
    full, head_full, loss_full, _ = grads(1.0)
    assert loss_scaled == loss_full and set(metrics) == {"dense_prm/loss", "dense_prm/kept_frac", "dense_prm/pos_frac"}
    for a, b in zip(scaled, full):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, 1e-4 * b)
    for a, b in zip(head_scaled, head_full):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_the_head_learns_to_rank_correct_above_wrong(pooling):
    """A token feature that marks wrong trajectories (high entropy where the slip was sampled), invisible to the
    logprob prior: after some steps the head scores the correct trajectory higher than the wrong one. (Min pooling
    sends the gradient to the lowest token only, so on these all-equal tokens it has no slip to find.)"""
    batch = _batch()
    fwd = _forward(batch)
    fwd.logprobs[:] = -0.5 * batch.response_mask  # the prior sees no difference
    fwd.entropy[:] = 0.1
    fwd.entropy[1, 1] = 3.0  # the wrong trajectory's slip
    head = DenseHeadTrainer(H, _settings(features=("logprob", "entropy"), pooling=pooling), torch.device("cpu"),
                            seed=0)
    before = head.scores(fwd, batch)
    assert before[0] == before[1]
    for _ in range(100):
        loss, _ = head.loss(fwd, batch)
        loss.backward()
        head.step()
    after = head.scores(fwd, batch)
    assert after[0] > 0.5 > after[1]


def test_format_failures_are_left_out_of_the_loss():
    batch = _batch()
    batch.format_ok = torch.tensor([True, False])
    head = DenseHeadTrainer(H, _settings(), torch.device("cpu"), seed=0)
    assert head.labels(batch).tolist() == [1.0, -1.0]


def test_export_round_trip_and_the_registry(tmp_path):
    batch = _batch()
    fwd = _forward(batch)
    settings = _settings(pooling="attention", features=("hidden", "logprob"))
    (head,) = build_heads([("dense_prm", settings)], H, torch.device("cpu"), seed=3)
    assert head.hidden_layer == -2 and not head.uses_entropy and not head.uses_top_logprob
    with torch.no_grad():
        for p in head.module.parameters():
            p.add_(0.1)
    head.export(str(tmp_path))
    assert saved_dense_head(str(tmp_path)) == settings
    other = DenseHeadTrainer(H, settings, torch.device("cpu"), seed=5)
    other.load_export(str(tmp_path))
    torch.testing.assert_close(other.scores(fwd, batch), head.scores(fwd, batch))


def test_unknown_features_are_refused():
    with pytest.raises(ValueError, match="features"):
        DenseHeadTrainer(H, _settings(features=("hidden", "attention")), torch.device("cpu"), seed=0)


def test_the_forward_gives_the_top_logprob_and_the_entropy_from_its_own_logsumexp(micro_model_dir):
    """The extras a head may read, from a real Qwen2 forward: the most likely token's logprob is the max of
    log_softmax, the entropy the textbook -Σ p log p (computed from the logprobs' logsumexp), both 0 off the
    response, and asking for them leaves the logprobs unchanged."""
    from transformers import AutoModelForCausalLM

    from rlpipe.learner.objective import forward_logprobs

    model = AutoModelForCausalLM.from_pretrained(str(micro_model_dir), dtype=torch.float32).eval()
    batch = build_batch([[1, 2, 3], [4]], [[5, 6, 7, 8], [9, 10]], [[0.0] * 4, [0.0] * 2], pad_id=0)
    with torch.no_grad():
        plain = forward_logprobs(model, batch, 0.7)
        timings: dict[str, float] = {}
        fwd = forward_logprobs(model, batch, 0.7, with_entropy=True, with_top_logprob=True, timings=timings)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids).logits[:, batch.prompt_len - 1:-1].float() / 0.7
    logp = torch.log_softmax(logits, dim=-1)
    mask = batch.response_mask
    assert plain.top_logprobs is None and set(timings) == {"entropy_seconds", "top_logprob_seconds", "hidden_seconds"}
    torch.testing.assert_close(fwd.logprobs, plain.logprobs)
    torch.testing.assert_close(fwd.top_logprobs, logp.amax(-1).masked_fill(~mask, 0.0))
    torch.testing.assert_close(fwd.entropy[mask], -(logp.exp() * logp).sum(-1)[mask], rtol=1e-5, atol=1e-5)
