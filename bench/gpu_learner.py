"""The learner's GPU path without Ray or vLLM: FSDP2 over NCCL on CUDA, bf16 throughput, and fp32 weight-push parity.

    python bench/gpu_learner.py throughput [--size 0.5b] [--samples 64] [--prompt 256] [--response 768]
    python bench/gpu_learner.py parity [--backend deepspeed --zero-stage 3]

``throughput``: one learner rank (NCCL process group of size 1, FSDP2 ``fully_shard``, AdamW) in bf16 on a
Qwen2.5-0.5B-shaped Qwen2 model (random weights, real architecture and vocabulary size); times old+reference
logprobs, one update of ``--minibatches`` optimizer steps and the full-weight export, and prints tokens/s and peak
GPU memory.

``parity``: the tiny default-job model in fp32 (TF32 off). One update, export the full weights, load them into the
transformers rollout engine (``rollout.engine=hf``) on the same GPU, sample, and compare the engine's sampled-token
logprobs with the learner's for the same tokens. It is the CUDA counterpart of tests/rollout/test_weight_sync.py
for the HF engine (vLLM is not installed on the GPU machines this was measured on).

Needs only torch, transformers and tokenizers: the GPU image has no Ray, vLLM or Hydra.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlpipe.learner.batch import SampleShard  # noqa: E402
from rlpipe.learner.objective import GlobalCounts, ObjectiveSettings  # noqa: E402
from rlpipe.learner.rank import CorrectionSettings, LearnerRank, OptimizerSettings, free_port_address  # noqa: E402

QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936)


def build_model(out: Path, shape: dict, tokenizer_vocab: int = 512) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlpipe.models.tiny import tokenizer_corpus, train_tokenizer

    tokenizer = train_tokenizer(tokenizer_corpus(0), tokenizer_vocab)
    tokenizer.save_pretrained(out)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen2Config(max_position_embeddings=4096, tie_word_embeddings=True, eos_token_id=eos, bos_token_id=eos,
                         pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), rope_theta=1e6, **shape)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(out)
    return out


def make_worker(model_path: Path, dtype: str, micro: int, lr: float, backend: str = "fsdp2",
                zero_stage: int = 2) -> LearnerRank:
    addr, port = free_port_address()
    objective = ObjectiveSettings(policy_loss="ppo_clip", clip_low=0.2, clip_high=0.2, dual_clip=None,
                                  loss_aggregation="token_mean", loss_constant=None, kl_coef=0.001, kl_estimator="k3",
                                  kl_level="token", kl_in_loss=True, entropy_coef=0.0, temperature=1.0)
    return LearnerRank(
        rank=0, world_size=1, master_addr=addr, master_port=port, model_path=str(model_path), backend=backend,
        optimizer=OptimizerSettings(lr=lr, betas=(0.9, 0.999), weight_decay=0.0, max_grad_norm=1.0),
        objective=objective, micro_batch_samples=micro, with_reference=True, seed=0, dtype=dtype,
        backend_options={"zero_stage": zero_stage} if backend == "deepspeed" else {}, dist_timeout_s=600.0,
        old_logprobs="recompute", correction=CorrectionSettings("none", 2.0, "token"))


def samples(prompts, responses, logprobs, minibatches: int = 1) -> SampleShard:
    n = len(responses)
    return SampleShard.build(prompts=prompts, prompt_index=list(range(n)), responses=responses, logprobs=logprobs,
                             loss_mask=[True] * n, minibatch=[i * minibatches // n for i in range(n)],
                             outcome=[0.0] * n, format_ok=[True] * n)


def counts_of(shard: SampleShard) -> list[GlobalCounts]:
    return [GlobalCounts.of_lengths(shard.response_lengths[shard.minibatch == mb], shard.loss_mask[shard.minibatch == mb],
                                    1) for mb in range(shard.num_minibatches())]


def synthetic_batch(n: int, prompt: int, response: int, vocab: int, minibatches: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, vocab, (prompt,), generator=g).tolist() for _ in range(n)]
    # Ragged responses, as in RL: lengths spread between a quarter and all of the maximum.
    lengths = torch.randint(response // 4, response + 1, (n,), generator=g).tolist()
    responses = [torch.randint(3, vocab, (k,), generator=g).tolist() for k in lengths]
    return samples(prompts, responses, [[0.0] * k for k in lengths], minibatches), torch.randn(n, generator=g)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    _sync()
    t = time.perf_counter()
    out = fn()
    _sync()
    return out, time.perf_counter() - t


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (dry run)"


def peak_gib() -> float:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else float("nan")


def throughput(args) -> dict:
    shape = dict(QWEN25_05B) if not args.dry_run else dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                              num_attention_heads=2, num_key_value_heads=1,
                                                              vocab_size=1024)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp), shape)
        worker = make_worker(model, "bfloat16", args.micro, lr=1e-6, backend=args.backend, zero_stage=args.zero_stage)
    batch, advantages = synthetic_batch(args.samples, args.prompt, args.response, vocab=512,
                                        minibatches=args.minibatches)
    tokens = int(batch.response_lengths.sum())
    result = {"gpu": device_name(), "torch": torch.__version__, "backend": _backend_name(args), "model": "Qwen2, Qwen2.5-0.5B shape" if not args.dry_run else "toy",
              "params": sum(p.numel() for p in worker.backend.module.parameters()), "samples": args.samples,
              "prompt_tokens": args.prompt, "max_response_tokens": args.response, "response_tokens": tokens,
              "micro_batch_samples": args.micro, "minibatches": args.minibatches}
    for rep in range(2):  # the first repetition pays cuBLAS/allocator warm-up; the second is reported
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        _, t_lp = timed(lambda: worker.prepare(batch))
        metrics, t_up = timed(lambda: worker.update(advantages, counts_of(batch)))
        state, t_export = timed(worker.export_weights)
        result.update({"logprobs_s": round(t_lp, 3), "update_s": round(t_up, 3), "export_s": round(t_export, 3),
                       "logprob_tokens_per_s": round(2 * tokens / t_lp), "update_tokens_per_s": round(tokens / t_up),
                       "peak_gpu_mem_gib": peak_gib(),
                       "pg_loss": round(metrics["actor/pg_loss"], 5), "grad_norm": round(metrics["actor/grad_norm"], 4),
                       "export_tensors": len(state)})
    return result


def parity(args) -> dict:
    from rlpipe.models.tiny import build_tiny_model
    from rlpipe.rollout.hf_engine import HFEngine
    from rlpipe.rollout.types import GenerationRequest, SamplingSettings

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tmp = tempfile.mkdtemp()
    model = build_tiny_model(tmp, size="tiny")
    # A large step, so a stale engine would be caught.
    worker = make_worker(model, "float32", micro=16, lr=1e-2, backend=args.backend, zero_stage=args.zero_stage)
    engine = HFEngine(str(model))
    sampling = SamplingSettings.unforced(temperature=1.0, top_p=1.0, max_response_tokens=48)
    tok = engine.tokenizer
    prompts = [tok(f"{a} + {b} =")["input_ids"] for a, b in [(12, 7), (30, 4), (25, 9), (18, 3)]]
    reqs = [GenerationRequest(f"p{i}", tuple(p), 4, seed=i) for i, p in enumerate(prompts)]

    def learner_vs_engine() -> float:
        comps = engine.generate(reqs, sampling)
        batch = samples([prompts[int(c.request_id[1:])] for c in comps], [c.response_ids for c in comps],
                        [c.logprobs for c in comps])
        lp = worker.response_logprobs(batch)
        return float((lp - batch.rollout_logprobs).abs().max()), batch

    before, batch = learner_vs_engine()
    worker.prepare(batch)
    worker.update(torch.linspace(-1, 1, batch.num_samples), counts_of(batch))
    stale, _ = learner_vs_engine()  # the engine still has the old weights
    engine.load_weights(worker.export_weights())
    after, _ = learner_vs_engine()
    return {"gpu": device_name(), "backend": _backend_name(args), "dtype": "float32 (TF32 off)",
            "max_abs_logprob_diff_before_update": before, "after_update_before_push": stale,
            "after_push": after}


def _backend_name(args) -> str:
    return f"deepspeed ZeRO-{args.zero_stage}" if args.backend == "deepspeed" else args.backend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["throughput", "parity"])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--response", type=int, default=768)
    ap.add_argument("--micro", type=int, default=8)
    ap.add_argument("--minibatches", type=int, default=2)
    ap.add_argument("--backend", choices=["fsdp2", "deepspeed"], default="fsdp2")
    ap.add_argument("--zero-stage", type=int, default=2)
    ap.add_argument("--dry-run", action="store_true", help="a toy model on CPU: checks the script, not the GPU")
    ap.add_argument("--out", default=None, help="also write the result as JSON here")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.dry_run:
        sys.exit("bench/gpu_learner.py needs a CUDA GPU")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = throughput(args) if args.mode == "throughput" else parity(args)
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
