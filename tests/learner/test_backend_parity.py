"""DeepSpeed ZeRO-1/2/3 and FSDP2 train the same way: two gloo ranks, fp32, the same seed and batches, five
updates. The per-step loss and gradient norm and the final weights agree; a DeepSpeed checkpoint taken after step 3
and loaded into fresh ranks gives the same step-4 loss as the uninterrupted run."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from conftest import free_port
from rlpipe.driver.clients import shard_plan
from support import counts, learner_rank, shard

pytestmark = pytest.mark.slow
STEPS = 5
WORLD = 2


def _batch(vocab: int, step: int):
    g = torch.Generator().manual_seed(100 + step)
    n = 8
    prompts = [torch.randint(3, vocab, (int(torch.randint(2, 7, (1,), generator=g)),), generator=g).tolist()
               for _ in range(n)]
    responses = [torch.randint(3, vocab, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
                 for _ in range(n)]
    return prompts, responses, torch.randn(n, generator=g)



def _worker(rank, port, model_dir, backend, stage, packing="none"):
    return learner_rank(model_dir, port, rank=rank, world_size=WORLD, backend=backend, max_grad_norm=1.0,
                        micro_batch_samples=2, kl_coef=0.05, clip_high=0.28, packing=packing,
                        max_tokens_per_micro_batch=None if packing == "none" else 16,
                        backend_options={"zero_stage": stage} if backend == "deepspeed" else {})


def _step(worker, rank, vocab, step):
    prompts, responses, advantages = _batch(vocab, step)
    rows = [i for i, _ in shard_plan([len(r) for r in responses], 1, WORLD)[rank]]
    worker.prepare(shard(prompts, responses, rows=rows))  # old = the current policy: ratios start at 1
    mine = torch.tensor([advantages[i] if i >= 0 else 0.0 for i in rows])
    metrics = worker.update(mine, [counts(responses, WORLD)])
    gathered = [None] * WORLD
    torch.distributed.all_gather_object(gathered, metrics)
    return {k: sum(m[k] for m in gathered) / WORLD for k in metrics}


def _rank_main(rank, port, model_dir, backend, stage, out_path, ckpt_dir, resume, packing="none"):
    torch.set_num_threads(1)
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(model_dir).vocab_size
    worker = _worker(rank, port, model_dir, backend, stage, packing)
    steps = {}
    if resume:
        worker.load_checkpoint(str(ckpt_dir))
        steps[4] = _step(worker, rank, vocab, 4)
    else:
        for step in range(1, STEPS + 1):
            steps[step] = _step(worker, rank, vocab, step)
            if step == 3 and ckpt_dir is not None:
                worker.save_checkpoint(str(ckpt_dir))
    weights = worker.export_weights()
    if rank == 0:
        torch.save({"steps": steps, "weights": weights}, out_path)
    worker.shutdown()


def _run(model_dir, backend, stage, tmp_path, ckpt_dir=None, resume=False, packing="none"):
    out = tmp_path / f"{backend}{stage}{packing}{'-resumed' if resume else ''}.pt"
    mp.start_processes(_rank_main, args=(free_port(), model_dir, backend, stage, out, ckpt_dir, resume, packing),
                       nprocs=WORLD, join=True, start_method="spawn")
    return torch.load(out)


@pytest.fixture(scope="module")
def fsdp2_run(micro_model_dir, tmp_path_factory):
    return _run(micro_model_dir, "fsdp2", 0, tmp_path_factory.mktemp("fsdp2"))


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_deepspeed_stage_matches_fsdp2_and_resumes_exactly(micro_model_dir, fsdp2_run, stage, tmp_path):
    ds = _run(micro_model_dir, "deepspeed", stage, tmp_path, ckpt_dir=tmp_path / "ckpt")
    for step in range(1, STEPS + 1):
        for key in ("actor/pg_loss", "actor/kl", "actor/grad_norm"):
            assert ds["steps"][step][key] == pytest.approx(fsdp2_run["steps"][step][key], rel=1e-4, abs=1e-6), \
                (step, key)
    assert fsdp2_run["steps"][STEPS]["actor/kl"] > 0  # the policy moved away from the reference
    for name, w in fsdp2_run["weights"].items():
        torch.testing.assert_close(ds["weights"][name], w, rtol=0, atol=1e-5, msg=name)

    resumed = _run(micro_model_dir, "deepspeed", stage, tmp_path, ckpt_dir=tmp_path / "ckpt", resume=True)
    for key in ("actor/pg_loss", "actor/kl", "actor/grad_norm"):
        assert resumed["steps"][4][key] == pytest.approx(ds["steps"][4][key], rel=1e-6, abs=1e-8), key


@pytest.mark.parametrize("backend,stage", [("fsdp2", 0), ("deepspeed", 3)])
def test_packed_token_budget_training_matches_padded_fsdp2(micro_model_dir, fsdp2_run, backend, stage, tmp_path):
    """``learner.packing=shared_prefix`` with a 16-token budget (more, smaller micro-batches than the padded run's 2
    samples each) trains as the padded FSDP2 run does, on FSDP2 and on ZeRO-3 (partitioned parameters gathered by
    DeepSpeed's hooks around the custom attention call)."""
    packed = _run(micro_model_dir, backend, stage, tmp_path, packing="shared_prefix")
    for step in range(1, STEPS + 1):
        for key in ("actor/pg_loss", "actor/kl", "actor/grad_norm"):
            assert packed["steps"][step][key] == pytest.approx(fsdp2_run["steps"][step][key], rel=1e-4, abs=1e-6), \
                (step, key)
    for name, w in fsdp2_run["weights"].items():
        torch.testing.assert_close(packed["weights"][name], w, rtol=0, atol=1e-5, msg=name)
