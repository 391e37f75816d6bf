"""After a weight push, vLLM's sampled-token logprobs equal the learner's logprobs of the same sequences (fp32), and
before the push they differ. Real vLLM (CPU build), real FSDP2 and DeepSpeed ZeRO-3 learners (gloo, one rank; ZeRO-3
gathers its partitioned parameters for the export), tiny Qwen2 model."""

from __future__ import annotations

import pytest
import torch

from conftest import free_port
from rlpipe.learner.batch import build_batch
from rlpipe.learner.objective import ObjectiveSettings
from rlpipe.learner.worker import LearnerWorker, OptimizerSettings
from rlpipe.rollout.types import GenerationRequest, SamplingSettings

pytestmark = pytest.mark.component
TEMPERATURE = 0.8  # not 1: checks that both sides apply the temperature the same way



def _max_diff(engine, learner, requests, pad_id) -> float:
    completions = engine.generate(requests, SamplingSettings(TEMPERATURE, 1.0, 24))
    prompt_ids = {r.request_id: list(r.prompt_ids) for r in requests}
    batch = build_batch([prompt_ids[c.request_id] for c in completions], [c.response_ids for c in completions],
                        [c.logprobs for c in completions], pad_id)
    learner_logprobs = learner.compute_logprobs(batch)["old_logprobs"]
    return float(((learner_logprobs - batch.rollout_logprobs).abs() * batch.response_mask).max())


@pytest.mark.parametrize("backend,options", [("fsdp2", {}), ("deepspeed", {"zero_stage": 3})],
                         ids=["fsdp2", "deepspeed-zero3"])
def test_vllm_logprobs_match_learner_after_push(micro_model_dir, backend, options):
    from rlpipe.rollout.vllm_engine import VLLMEngine

    learner = LearnerWorker(
        rank=0, world_size=1, master_addr="127.0.0.1", master_port=free_port(), model_path=str(micro_model_dir),
        backend=backend, optimizer=OptimizerSettings(lr=5e-2, max_grad_norm=0.0),
        objective=ObjectiveSettings(temperature=TEMPERATURE), micro_batch_samples=64, with_reference=False, seed=0,
        backend_options=options,
    )
    engine = VLLMEngine(str(micro_model_dir), seed=0, max_model_len=128, kv_cache_bytes=64 << 20)
    tok = engine.tokenizer
    requests = [
        GenerationRequest(f"p{i}", tuple(tok(tok.apply_chat_template([{"role": "user", "content": q}],
                                                                     add_generation_prompt=True, tokenize=False),
                                             add_special_tokens=False)["input_ids"]), 4, 100 + i)
        for i, q in enumerate(["Compute 12 + 7.", "Compute 30 - 4 + 2.", "Compute 5 + 5."])
    ]
    pad_id = tok.pad_token_id

    assert _max_diff(engine, learner, requests, pad_id) < 1e-3  # same initial weights

    # One large update so the learner's weights move away from the engine's.
    completions = engine.generate(requests, SamplingSettings(TEMPERATURE, 1.0, 24))
    prompt_ids = {r.request_id: list(r.prompt_ids) for r in requests}
    batch = build_batch([prompt_ids[c.request_id] for c in completions], [c.response_ids for c in completions],
                        [c.logprobs for c in completions], pad_id)
    batch.old_logprobs = batch.rollout_logprobs
    batch.advantages = torch.linspace(-1, 1, batch.num_samples)
    from rlpipe.learner.objective import GlobalCounts

    learner.update([(batch, GlobalCounts.of(batch.response_mask, 1))])

    before = _max_diff(engine, learner, requests, pad_id)
    engine.load_weights(learner.export_weights())
    after = _max_diff(engine, learner, requests, pad_id)
    print(f"max |logprob diff| before push {before:.3g}, after push {after:.3g}")
    assert before > 1e-2
    assert after < 1e-3
    engine.shutdown()
    learner.shutdown()
