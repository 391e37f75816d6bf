"""The update is the same whether the batch is processed whole on one rank, or split into micro-batches across two
FSDP2 ranks (real gloo process groups). Compares the pre-clip gradient norm (catches any scale error, which Adam's
first step would hide), the loss, and the weights after one AdamW step (catches direction errors)."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from conftest import free_port
from rlpipe.learner.batch import build_batch, pad_to_multiple, split_even
from rlpipe.learner.objective import GlobalCounts, ObjectiveSettings
from rlpipe.learner.worker import LearnerWorker, OptimizerSettings

pytestmark = pytest.mark.component


def _batch(vocab: int):
    g = torch.Generator().manual_seed(0)
    n = 12
    prompts = [torch.randint(3, vocab, (int(torch.randint(2, 7, (1,), generator=g)),), generator=g).tolist()
               for _ in range(n)]
    responses = [torch.randint(3, vocab, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
                 for _ in range(n)]
    batch = build_batch(prompts, responses, [[0.0] * len(r) for r in responses], pad_id=0)
    t = batch.response_mask.shape[1]
    # Old/ref logprobs away from the current policy, so ratios leave the clip range and the KL is non-trivial.
    batch.old_logprobs = (-6.0 + torch.randn(n, t, generator=g)) * batch.response_mask
    batch.ref_logprobs = (-6.0 + torch.randn(n, t, generator=g)) * batch.response_mask
    batch.advantages = torch.randn(n, generator=g)
    return batch



def _rank_main(rank, world, port, model_dir, aggregation, micro, out_path):
    torch.set_num_threads(1)
    worker = LearnerWorker(
        rank=rank, world_size=world, master_addr="127.0.0.1", master_port=port, model_path=str(model_dir),
        backend="fsdp2", optimizer=OptimizerSettings(lr=1e-3, max_grad_norm=0.0),
        objective=ObjectiveSettings(loss_aggregation=aggregation, kl_coef=0.1, loss_constant=8.0,
                                    clip_low=0.2, clip_high=0.28),
        micro_batch_samples=micro, with_reference=True, seed=0,
    )
    from transformers import AutoConfig

    batch = _batch(AutoConfig.from_pretrained(model_dir).vocab_size)
    counts = GlobalCounts.of(batch.response_mask, world)
    shard = split_even(pad_to_multiple(batch, world), world)[rank]
    metrics = worker.update([(shard, counts)])
    weights = worker.export_weights()
    # metrics are per-rank shares: gather them like LearnerGroup does (mean over ranks).
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, metrics)
    if rank == 0:
        mean = {k: sum(m[k] for m in gathered) / world for k in metrics}
        torch.save({"metrics": mean, "weights": weights}, out_path)
    worker.shutdown()


def _run(world, model_dir, aggregation, micro, tmp_path):
    out = tmp_path / f"w{world}_{aggregation}.pt"
    mp.start_processes(_rank_main, args=(world, free_port(), model_dir, aggregation, micro, out), nprocs=world,
                       join=True, start_method="spawn")
    return torch.load(out)


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_two_ranks_with_micro_batches_equal_one_rank_whole_batch(micro_model_dir, aggregation, tmp_path):
    whole = _run(1, micro_model_dir, aggregation, micro=64, tmp_path=tmp_path)  # one rank, one micro-batch
    split = _run(2, micro_model_dir, aggregation, micro=2, tmp_path=tmp_path)  # 2 ranks x 3 micro-batches
    for key in ("actor/grad_norm", "actor/pg_loss", "actor/kl", "actor/clipfrac"):
        assert split["metrics"][key] == pytest.approx(whole["metrics"][key], rel=1e-5, abs=1e-7), key
    assert whole["metrics"]["actor/clipfrac"] > 0  # the clip branch was exercised
    for name, w in whole["weights"].items():
        torch.testing.assert_close(split["weights"][name], w, rtol=0, atol=2e-6, msg=name)
