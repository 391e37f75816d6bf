"""After a weight push, vLLM's sampled-token logprobs equal the learner's logprobs of the same sequences (fp32), and
before the push they differ. Real vLLM (CPU build), real FSDP2 and DeepSpeed ZeRO-3 learners (gloo, one rank; ZeRO-3
gathers its partitioned parameters for the export), tiny Qwen2 model."""

from __future__ import annotations

import pytest
import torch

from conftest import free_port
from rlpipe.rollout.types import GenerationRequest, SamplingSettings
from support import counts, learner_rank, shard

pytestmark = pytest.mark.component
TEMPERATURE = 0.8  # not 1: checks that both sides apply the temperature the same way



def _samples(engine, requests):
    completions = engine.generate(requests, SamplingSettings.unforced(TEMPERATURE, 1.0, 24))
    prompt_ids = {r.request_id: list(r.prompt_ids) for r in requests}
    return shard([prompt_ids[c.request_id] for c in completions], [c.response_ids for c in completions],
                 [c.logprobs for c in completions])


def _max_diff(engine, learner, requests) -> float:
    samples = _samples(engine, requests)
    return float((learner.response_logprobs(samples) - samples.rollout_logprobs).abs().max())


@pytest.mark.parametrize("backend,options", [("fsdp2", {}), ("deepspeed", {"zero_stage": 3})],
                         ids=["fsdp2", "deepspeed-zero3"])
def test_vllm_logprobs_match_learner_after_push(micro_model_dir, backend, options):
    from rlpipe.rollout.vllm_engine import VLLMEngine

    learner = learner_rank(micro_model_dir, free_port(), backend=backend, backend_options=options, lr=5e-2,
                           micro_batch_samples=64, with_reference=False, temperature=TEMPERATURE)
    engine = VLLMEngine(str(micro_model_dir), seed=0, max_model_len=128, kv_cache_bytes=64 << 20)
    tok = engine.tokenizer
    requests = [
        GenerationRequest(f"p{i}", tuple(tok(tok.apply_chat_template([{"role": "user", "content": q}],
                                                                     add_generation_prompt=True, tokenize=False),
                                             add_special_tokens=False)["input_ids"]), 4, 100 + i)
        for i, q in enumerate(["Compute 12 + 7.", "Compute 30 - 4 + 2.", "Compute 5 + 5."])
    ]

    assert _max_diff(engine, learner, requests) < 1e-3  # same initial weights

    # One large update so the learner's weights move away from the engine's.
    samples = _samples(engine, requests)
    learner.prepare(samples)
    responses = samples.response_ids.split(samples.response_lengths.tolist())
    metrics = learner.update(torch.linspace(-1, 1, samples.num_samples), [counts(responses, 1)])
    assert metrics["rollout/logprob_diff_max"] < 1e-3  # the update's own engine/learner check, same weights

    before = _max_diff(engine, learner, requests)
    engine.load_weights(learner.export_weights())
    after = _max_diff(engine, learner, requests)
    print(f"max |logprob diff| before push {before:.3g}, after push {after:.3g}")
    assert before > 1e-2
    assert after < 1e-3
    engine.shutdown()
    learner.shutdown()


def test_an_engine_alone_releases_the_default_group_it_created(micro_model_dir):
    """An engine built first in a process (a script, a test) creates torch.distributed's default group; its shutdown
    must release it, or a learner built later in that process fails ("initialize the default process group twice")."""
    import torch.distributed as dist

    from rlpipe.rollout.vllm_engine import VLLMEngine

    assert not dist.is_initialized()
    engine = VLLMEngine(str(micro_model_dir), seed=0, max_model_len=128, kv_cache_bytes=64 << 20)
    assert dist.is_initialized()
    engine.shutdown()
    assert not dist.is_initialized()
    learner = learner_rank(micro_model_dir, free_port(), backend="fsdp2", backend_options={}, lr=1e-3,
                           micro_batch_samples=8, with_reference=False, temperature=1.0)
    learner.shutdown()
