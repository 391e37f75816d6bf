"""Packed forward passes (rlpipe.learner.packing) against the padded layout, on a real Qwen2 and a real Llama (fp32):
per-token logprobs, entropies and hidden states (in the padded layout, as auxiliary heads read them) within 1e-5 and
parameter gradients within 1e-4, with very different lengths and several samples per prompt (shared prefixes)."""

from __future__ import annotations

import pytest
import torch

from rlpipe.learner.batch import SampleShard
from rlpipe.learner.objective import forward_logprobs
from rlpipe.learner.rank import LearnerRank

# 3 prompts (2, 9 and 17 tokens), 7 samples: 1 to 40 response tokens, one empty response, prompts shared 3/1/3 times.
PROMPTS = [[5, 6], [7, 8, 9, 10, 11, 12, 13, 14, 15], list(range(20, 37))]
SAMPLES = [(0, 40), (0, 1), (0, 7), (1, 23), (2, 3), (2, 0), (2, 31)]


def _shard() -> SampleShard:
    """One rank's shard as the driver builds it: each prompt once, samples pointing at theirs."""
    g = torch.Generator().manual_seed(0)
    responses = [torch.randint(3, 200, (r,), generator=g).tolist() for _, r in SAMPLES]
    n = len(SAMPLES)
    return SampleShard.build(prompts=PROMPTS, prompt_index=[k for k, _ in SAMPLES], responses=responses,
                             logprobs=[[0.0] * len(r) for r in responses], loss_mask=[True] * n, minibatch=[0] * n,
                             outcome=[0.0] * n, format_ok=[True] * n)


def _models(micro_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    qwen = AutoModelForCausalLM.from_pretrained(micro_model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=qwen.config.vocab_size, hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=256, attn_implementation="sdpa"))
    return {"qwen2": qwen, "llama": llama}


def _logprobs_and_grads(model, batch):
    """Logprobs, entropy and the second-to-last layer's hidden states at the real response tokens (what an auxiliary
    head reads), and the gradients of a loss over all three."""
    model.zero_grad(set_to_none=True)
    fwd = forward_logprobs(model, batch, temperature=0.7, with_entropy=True, hidden_layers=(-2,))
    hidden = fwd.hidden[-2] * batch.response_mask.unsqueeze(-1)
    (fwd.logprobs.sum() + 0.1 * (fwd.entropy * batch.response_mask).sum() + 0.01 * hidden.sum()).backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return fwd.logprobs.detach(), (fwd.entropy * batch.response_mask).detach(), hidden.detach(), grads


@pytest.mark.parametrize("packing", ["sequences", "shared_prefix"])
def test_packed_logprobs_and_gradients_equal_the_padded_ones(micro_model_dir, tmp_path, packing):
    samples = _shard()
    rows = list(range(len(SAMPLES)))
    padded = samples.to_train_batch(rows, pad_id=0)
    packed = samples.to_train_batch(rows, pad_id=0, packing=packing)
    real = sum(len(PROMPTS[k]) + r for k, r in SAMPLES)
    shared = sum(len(p) for p in PROMPTS) + sum(r for _, r in SAMPLES)
    assert packed.packed.num_tokens == (shared if packing == "shared_prefix" else real)
    assert packed.packed.num_tokens < padded.input_ids.numel()  # 7 x 57 padded tokens
    for name, model in _models(micro_model_dir, tmp_path).items():
        lp_pad, ent_pad, hid_pad, g_pad = _logprobs_and_grads(model, padded)
        lp_pack, ent_pack, hid_pack, g_pack = _logprobs_and_grads(model, packed)
        assert model.config._attn_implementation == "sdpa"  # restored after the packed call
        torch.testing.assert_close(lp_pack, lp_pad, rtol=0, atol=1e-5, msg=name)
        torch.testing.assert_close(ent_pack, ent_pad, rtol=0, atol=1e-5, msg=name)
        torch.testing.assert_close(hid_pack, hid_pad, rtol=0, atol=1e-5, msg=name)
        assert g_pack.keys() == g_pad.keys()
        for key in g_pad:
            torch.testing.assert_close(g_pack[key], g_pad[key], rtol=1e-4, atol=1e-4, msg=f"{name} {key}")
        assert lp_pad[0, :40].abs().sum() > 0 and lp_pad[5].abs().sum() == 0  # real tokens, and the empty response


def test_a_shared_prompt_appears_once_in_the_stream():
    samples = _shard()
    layout = samples.to_train_batch(range(len(SAMPLES)), pad_id=0, packing="shared_prefix").packed
    stream = layout.input_ids[0].tolist()
    assert stream[:2] == PROMPTS[0] and stream[2:42] == samples.response_ids[:40].tolist()
    # Every response continues its prompt's positions; the first response token is predicted by the prompt's last.
    assert layout.position_ids[0, 2:4].tolist() == [2, 3]
    assert layout.predict.view(len(SAMPLES), -1)[1, 0] == 1  # sample 1 (prompt 0, 2 tokens): stream position 1
    assert sorted(layout.owner.tolist()) == sorted(set(layout.owner.tolist()))  # every token one owner


def _planner(packing: str, budget, micro_batch_samples: int) -> LearnerRank:
    """Just the micro-batch planning of a rank (one rank: no collective)."""
    rank = LearnerRank.__new__(LearnerRank)
    rank.packing, rank.max_tokens_per_micro_batch = packing, budget
    rank.micro_batch_samples, rank.world_size = micro_batch_samples, 1
    return rank


@pytest.mark.parametrize("budget", [None, 10_000, 40])
def test_shared_prefix_micro_batches_keep_prompt_groups_and_both_limits(budget):
    # 3 prompts x 4 samples; at most 6 samples per micro-batch. Units of 4 cannot pair up under that cap, so 3
    # micro-batches, not ceil(12 / 6) = 2, and each keeps its prompt's samples together (its prompt runs once).
    n = 12
    samples = SampleShard.build(prompts=[[1, 2], [3, 4, 5], [6]], prompt_index=[i // 4 for i in range(n)],
                                responses=[[7] * (i + 1) for i in range(n)], logprobs=[[0.0] * (i + 1) for i in range(n)],
                                loss_mask=[True] * n, minibatch=[0] * n, outcome=[0.0] * n, format_ok=[True] * n)
    micro = _planner("shared_prefix", budget, 6)._micro_batch_rows(samples)[0]
    assert sorted(i for m in micro for i in m.tolist()) == list(range(n))
    assert all(len(m) <= 6 for m in micro)
    # With a 40-token budget the reason is the tokens as well: the units cost 2 + (1+2+3+4) = 12, 3 + (5+..+8) = 29
    # and 1 + (9+..+12) = 43 stream tokens, so 12 + 29 = 41 > 40 and the 43-token unit stands alone, as a long
    # sample does.
    assert len(micro) == 3 and all(len(set((m // 4).tolist())) == 1 for m in micro)
