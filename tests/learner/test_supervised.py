"""The learner's SFT step: its loss is the next-token loss Hugging Face computes with ``labels`` masked to the
trained tokens (so the mask is right: a multi-turn conversation trains only its assistant turns), one step equals a
plain torch AdamW step on that loss, and packing / token budgets / FSDP2 vs DeepSpeed ZeRO change nothing."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import free_port
from rlpipe.driver.clients import _supervised_shard, shard_plan
from rlpipe.learner.objective import GlobalCounts
from rlpipe.tasks.conversations import ChatEncoder
from support import learner_rank

CHATS = [
    [{"role": "user", "content": f"Compute {a} + {b}."}, {"role": "assistant", "content": f"{a} + {b} = {a + b}."},
     {"role": "user", "content": "Now double it."}, {"role": "assistant", "content": f"{2 * (a + b)}."}]
    for a, b in [(1, 2), (13, 4), (7, 7), (30, 9), (2, 5), (11, 11)]
]


def _examples(model_dir):
    enc = ChatEncoder(AutoTokenizer.from_pretrained(model_dir))
    rows = [{"messages": c} for c in CHATS] + [{"prompt": "5 + 5 =", "completion": " 10"}, {"text": "12 + 1 = 13."}]
    return [enc.encode(r, f"r{i}") for i, r in enumerate(rows)]


def _hf_batch(examples, pad_id):
    """Right-padded input ids and labels (-100 = no loss) as Hugging Face's trainers build them."""
    width = max(e.num_tokens for e in examples)
    ids, labels = [], []
    for e in examples:
        tokens = e.prompt_ids + e.response_ids
        target = [-100] * len(e.prompt_ids) + [t if m else -100 for t, m in zip(e.response_ids, e.response_mask)]
        ids.append(tokens + [pad_id] * (width - len(tokens)))
        labels.append(target + [-100] * (width - len(tokens)))
    ids = torch.tensor(ids)
    return ids, (ids != pad_id) | (torch.tensor(labels) != -100), torch.tensor(labels)


def _counts(examples, dp_size=1):
    return GlobalCounts(sum(e.loss_tokens for e in examples), len(examples), dp_size)


def _one_rank_shard(examples):
    return _supervised_shard(examples, [(i, 0) for i in range(len(examples))])


@pytest.mark.parametrize("packing,budget", [("none", None), ("sequences", 40), ("shared_prefix", 40)])
def test_sft_step_is_the_hf_labels_loss_and_a_plain_adamw_step(micro_model_dir, packing, budget):
    examples = _examples(micro_model_dir)
    hf = AutoModelForCausalLM.from_pretrained(micro_model_dir, dtype=torch.float32)
    ids, attention, labels = _hf_batch(examples, hf.config.pad_token_id or 0)
    hf_loss = hf(input_ids=ids, attention_mask=attention, labels=labels).loss
    # The mask is the point: with every token trained the loss is a different number.
    everything = hf(input_ids=ids, attention_mask=attention, labels=ids.masked_fill(~attention, -100)).loss
    assert abs(float(everything.detach()) - float(hf_loss.detach())) > 1e-3

    rank = learner_rank(micro_model_dir, free_port(), lr=1e-2, with_reference=False, micro_batch_samples=3,
                        packing=packing, max_tokens_per_micro_batch=budget)
    try:
        heldout = rank.supervised_loss(_one_rank_shard(examples))
        assert heldout["nll_sum"] / heldout["tokens"] == pytest.approx(float(hf_loss.detach()), rel=1e-5)
        metrics = rank.supervised_update(_one_rank_shard(examples), _counts(examples), lr=1e-2)
        assert metrics["sft/loss"] == pytest.approx(float(hf_loss.detach()), rel=1e-5)
        after = rank.supervised_loss(_one_rank_shard(examples))
    finally:
        rank.shutdown()

    optimizer = torch.optim.AdamW(hf.parameters(), lr=1e-2, betas=(0.9, 0.999), weight_decay=0.0)
    hf_loss.backward()
    optimizer.step()
    # Compared through the loss, not weight by weight: Adam's first step moves every weight by about ±lr, so a
    # gradient of 1e-12 that rounds to the other sign moves a weight 2·lr the other way (and the loss not at all).
    with torch.no_grad():
        hf_after = float(hf(input_ids=ids, attention_mask=attention, labels=labels).loss)
    assert hf_after < float(hf_loss.detach()) - 0.05
    assert after["nll_sum"] / after["tokens"] == pytest.approx(hf_after, rel=1e-4)


WORLD = 2


def _rank_main(rank, port, model_dir, backend, stage, out_path):
    torch.set_num_threads(1)
    examples = _examples(model_dir)
    worker = learner_rank(model_dir, port, rank=rank, world_size=WORLD, backend=backend, max_grad_norm=1.0,
                          with_reference=False, micro_batch_samples=2, packing="shared_prefix",
                          max_tokens_per_micro_batch=48,
                          backend_options={"zero_stage": stage} if backend == "deepspeed" else {})
    plan = shard_plan([e.num_tokens for e in examples], 1, WORLD)
    losses = []
    for step in range(4):
        metrics = worker.supervised_update(_supervised_shard(examples, plan[rank]), _counts(examples, WORLD),
                                           lr=3e-3 * (step + 1))
        gathered = [None] * WORLD
        torch.distributed.all_gather_object(gathered, metrics)
        losses.append(sum(m["sft/loss"] for m in gathered) / WORLD)
    heldout = worker.supervised_loss(_supervised_shard(examples, plan[rank]))
    gathered = [None] * WORLD
    torch.distributed.all_gather_object(gathered, heldout)
    if rank == 0:
        torch.save({"losses": losses, "heldout": sum(g["nll_sum"] for g in gathered) / sum(g["tokens"] for g in gathered)},
                   out_path)
    worker.shutdown()


def _run(model_dir, backend, stage, tmp_path):
    out = tmp_path / f"{backend}{stage}.pt"
    mp.start_processes(_rank_main, args=(free_port(), model_dir, backend, stage, out), nprocs=WORLD, join=True,
                       start_method="spawn")
    return torch.load(out)


@pytest.mark.slow
def test_sft_losses_agree_on_fsdp2_and_deepspeed_zero(micro_model_dir, tmp_path):
    """Two gloo ranks, fp32, four SFT steps with a changing learning rate: ZeRO-2 and ZeRO-3 give FSDP2's losses."""
    fsdp2 = _run(micro_model_dir, "fsdp2", 0, tmp_path)
    assert fsdp2["losses"][-1] < fsdp2["losses"][0]  # it learns (the same rows every step)
    assert fsdp2["heldout"] < fsdp2["losses"][0]
    for stage in (2, 3):
        ds = _run(micro_model_dir, "deepspeed", stage, tmp_path)
        assert ds["losses"] == pytest.approx(fsdp2["losses"], rel=1e-4), stage
        assert ds["heldout"] == pytest.approx(fsdp2["heldout"], rel=1e-4), stage
