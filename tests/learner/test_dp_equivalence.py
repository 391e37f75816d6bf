"""The update is the same whether the batch is processed whole on one rank, or split into micro-batches across two
FSDP2 ranks (real gloo process groups). Compares the pre-clip gradient norm (catches any scale error, which Adam's
first step would hide) and the loss over two updates, and the weights after the first AdamW step (catches direction
errors).

The samples' behaviour logprobs are set away from the policy (``old_logprobs="rollout"``), so ratios leave the clip
range; the second update starts from a policy that has moved away from the reference, so the KL term is non-trivial.
"""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from conftest import free_port
from rlpipe.driver.clients import shard_plan
from support import counts, learner_rank, shard

pytestmark = pytest.mark.component
N = 12


def _samples(vocab: int):
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, vocab, (int(torch.randint(2, 7, (1,), generator=g)),), generator=g).tolist()
               for _ in range(N)]
    responses = [torch.randint(3, vocab, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
                 for _ in range(N)]
    logprobs = [(-6.0 + torch.randn(len(r), generator=g)).tolist() for r in responses]
    return prompts, responses, logprobs, torch.randn(N, generator=g)


def _rank_main(rank, world, port, model_dir, aggregation, micro, out_path, token_budget=None):
    torch.set_num_threads(1)
    worker = learner_rank(model_dir, port, rank=rank, world_size=world, micro_batch_samples=micro,
                          max_tokens_per_micro_batch=token_budget,
                          old_logprobs="rollout", loss_aggregation=aggregation, kl_coef=0.1, loss_constant=8.0,
                          clip_high=0.28)
    from transformers import AutoConfig

    prompts, responses, logprobs, advantages = _samples(AutoConfig.from_pretrained(model_dir).vocab_size)
    rows = [i for i, _ in shard_plan([len(r) for r in responses], 1, world)[rank]]
    mine = torch.tensor([advantages[i] if i >= 0 else 0.0 for i in rows])
    history, weights = [], None
    for step in range(2):
        worker.prepare(shard(prompts, responses, logprobs, rows))
        metrics = worker.update(mine, [counts(responses, world)])
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, metrics)  # mean over ranks, as LearnerClient does
        history.append({k: sum(m[k] for m in gathered) / world for k in metrics})
        if step == 0:  # a collective: every rank calls it. A copy: on one rank the export shares the live tensors.
            exported = worker.export_weights()
            weights = {k: v.clone() for k, v in exported.items()} if exported is not None else None
    if rank == 0:
        torch.save({"metrics": history, "weights": weights}, out_path)
    worker.shutdown()


def _run(world, model_dir, aggregation, micro, tmp_path, token_budget=None):
    out = tmp_path / f"w{world}_{aggregation}_{token_budget}.pt"
    mp.start_processes(_rank_main, args=(world, free_port(), model_dir, aggregation, micro, out, token_budget),
                       nprocs=world,
                       join=True, start_method="spawn")
    return torch.load(out)


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_two_ranks_with_micro_batches_equal_one_rank_whole_batch(micro_model_dir, aggregation, tmp_path):
    whole = _run(1, micro_model_dir, aggregation, micro=64, tmp_path=tmp_path)  # one rank, one micro-batch
    split = _run(2, micro_model_dir, aggregation, micro=2, tmp_path=tmp_path)  # 2 ranks x 3 micro-batches
    for step in range(2):
        for key in ("actor/grad_norm", "actor/pg_loss", "actor/kl", "actor/clipfrac"):
            assert split["metrics"][step][key] == pytest.approx(whole["metrics"][step][key], rel=1e-5, abs=1e-7), \
                (step, key)
    assert whole["metrics"][0]["actor/clipfrac"] > 0  # the clip branch was exercised
    assert whole["metrics"][1]["actor/kl"] > 1e-6  # and the KL term
    for name, w in whole["weights"].items():
        # A wrong direction moves a weight by ~lr = 1e-3; float rounding in a near-zero gradient, which Adam's
        # m/sqrt(v) scales up, by a few 1e-6 at most (measured: 3.5e-6, one element of 8192).
        torch.testing.assert_close(split["weights"][name], w, rtol=0, atol=1e-5, msg=name)


def test_token_budget_micro_batches_equal_one_rank_whole_batch(micro_model_dir, tmp_path):
    """``max_tokens_per_micro_batch``: two ranks cut their rows into micro-batches of at most 24 padded tokens (rows
    are 3-14 tokens long, so 1-4 rows each and a different count per rank before the all-reduce agrees on one); the
    update is the whole batch's on one rank."""
    whole = _run(1, micro_model_dir, "token_mean", micro=64, tmp_path=tmp_path)
    split = _run(2, micro_model_dir, "token_mean", micro=64, tmp_path=tmp_path, token_budget=24)
    for step in range(2):
        for key in ("actor/grad_norm", "actor/pg_loss", "actor/kl", "actor/clipfrac"):
            assert split["metrics"][step][key] == pytest.approx(whole["metrics"][step][key], rel=1e-5, abs=1e-7), \
                (step, key)
    for name, w in whole["weights"].items():
        torch.testing.assert_close(split["weights"][name], w, rtol=0, atol=1e-5, msg=name)
