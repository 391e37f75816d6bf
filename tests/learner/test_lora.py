"""LoRA on the learner: the merge and the adapter export against peft's own model, the reference as the base with
the adapters off, only adapters train, vLLM's logprobs equal the learner's after every merged push, and the rank's
exports (adapter directory; merged model + adapter) load back to the same model. Real peft, real FSDP2 and
DeepSpeed ZeRO-2 / ZeRO-3 (gloo, one rank), real vLLM (CPU build), tiny Qwen2 and Llama models."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import free_port
from rlpipe.learner.lora import LoraSettings, adapters_disabled, inject, merge_state, save_adapter
from rlpipe.rollout.types import GenerationRequest, SamplingSettings
from support import counts, learner_rank, shard

pytestmark = pytest.mark.component
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA = LoraSettings(rank=4, alpha=8.0, dropout=0.0, target_modules=TARGETS, export_merged=False)


def _model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _randomised_lora(path):
    """The model with adapters whose B is not zero (at init B = 0 and the adapter would change nothing)."""
    model = inject(_model(path), LORA)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


@pytest.fixture(params=["qwen2", "llama"])
def model_dir(request, micro_model_dir, tmp_path_factory):
    if request.param == "qwen2":
        return micro_model_dir
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    qwen = AutoConfig.from_pretrained(micro_model_dir)
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=qwen.vocab_size, hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=256, tie_word_embeddings=False))
    path = tmp_path_factory.mktemp("llama")
    llama.save_pretrained(path)
    return path


def test_merged_weights_and_the_adapter_export_give_the_adapted_models_logits(model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM

    lora_model = _randomised_lora(model_dir)
    ids = torch.tensor([[5, 17, 33, 8, 90, 41, 7]])
    with torch.no_grad():
        adapted = lora_model(input_ids=ids).logits
        with adapters_disabled(lora_model) as base:
            base_logits = base(input_ids=ids).logits
        plain = _model(model_dir)(input_ids=ids).logits
    assert torch.equal(base_logits, plain)  # adapters off = the base model, bit for bit
    assert (adapted - plain).abs().max() > 1e-3  # the adapters do change the output

    state = lora_model.state_dict()
    merged = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir)).eval()
    missing, unexpected = merged.load_state_dict(merge_state(state, LORA.scaling), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied to the embeddings
    merged.tie_weights()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, adapted, atol=1e-5, rtol=0)

    save_adapter(str(tmp_path / "adapter"), state, LORA, str(model_dir))
    loaded = PeftModel.from_pretrained(_model(model_dir), str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, adapted, atol=1e-6, rtol=0)


def _requests(tok):
    return [GenerationRequest(f"p{i}", tuple(tok(tok.apply_chat_template([{"role": "user", "content": q}],
                                                                          add_generation_prompt=True, tokenize=False),
                                                  add_special_tokens=False)["input_ids"]), 4, 100 + i)
            for i, q in enumerate(["Compute 12 + 7.", "Compute 30 - 4 + 2.", "Compute 5 + 5."])]


@pytest.mark.parametrize("backend,options", [("fsdp2", {}), ("deepspeed", {"zero_stage": 2}),
                                             ("deepspeed", {"zero_stage": 3})],
                         ids=["fsdp2", "deepspeed-zero2", "deepspeed-zero3"])
def test_only_adapters_train_and_vllm_matches_the_learner_after_every_push(micro_model_dir, tmp_path, backend,
                                                                           options):
    from rlpipe.rollout.vllm_engine import VLLMEngine

    temperature = 0.8
    learner = learner_rank(micro_model_dir, free_port(), lr=5e-2, micro_batch_samples=64, with_reference=True,
                           kl_coef=0.01, temperature=temperature, lora=LORA, backend=backend, backend_options=options)
    engine = VLLMEngine(str(micro_model_dir), seed=0, max_model_len=128, kv_cache_bytes=64 << 20)
    requests = _requests(engine.tokenizer)
    frozen = {n: p for n, p in learner.backend.full_state_dict().items() if ".lora_" not in n}
    metrics = learner.lora_metrics
    trainable = sum(p.numel() for n, p in inject(_model(micro_model_dir), LORA).named_parameters() if ".lora_" in n)
    assert metrics["lora/trainable_params"] == trainable < 0.2 * metrics["lora/total_params"]
    assert metrics["sync/adapter_push_bytes"] == 4 * trainable < metrics["sync/merged_push_bytes"]

    def sample():
        completions = engine.generate(requests, SamplingSettings.unforced(temperature, 1.0, 24))
        prompt_ids = {r.request_id: list(r.prompt_ids) for r in requests}
        return shard([prompt_ids[c.request_id] for c in completions], [c.response_ids for c in completions],
                     [c.logprobs for c in completions])

    gaps = []
    for round_ in range(3):
        samples = sample()
        out = learner.prepare(samples)
        if round_ == 0:  # B = 0 at the start: policy = reference, so the KL is exactly 0
            assert float(out["kl_sum"].abs().max()) == 0.0
        responses = samples.response_ids.split(samples.response_lengths.tolist())
        learner.update(torch.linspace(-1, 1, samples.num_samples), [counts(responses, 1)])
        samples = sample()
        before = float((learner.response_logprobs(samples) - samples.rollout_logprobs).abs().max())
        engine.load_weights(learner.export_weights())
        samples = sample()
        after = float((learner.response_logprobs(samples) - samples.rollout_logprobs).abs().max())
        gaps.append((before, after))
    print("max |logprob diff| (before, after) each push:", gaps)
    assert all(before > 1e-2 and after < 1e-3 for before, after in gaps)
    state = learner.backend.full_state_dict()
    assert set(frozen) < set(state)
    for n, p in frozen.items():
        assert torch.equal(state[n], p), f"{n} is frozen but changed"
    out = learner.prepare(sample())
    assert float(out["kl_sum"].abs().max()) > 0  # the reference stayed the base while the adapters moved

    # Exports: the peft adapter directory (default), and the merged model with the adapter beside it (on request).
    from peft import PeftModel

    ids = torch.tensor([[5, 17, 33, 8, 90, 41, 7]])
    with torch.no_grad():
        want = torch.log_softmax(_merged_logits(learner, micro_model_dir, ids), dim=-1)
    learner.save_hf(str(tmp_path / "adapter_only"), str(micro_model_dir))
    assert not (tmp_path / "adapter_only" / "config.json").exists()
    adapted = PeftModel.from_pretrained(_model(micro_model_dir), str(tmp_path / "adapter_only")).eval()
    learner.lora = dataclasses.replace(learner.lora, export_merged=True)
    learner.save_hf(str(tmp_path / "merged"), str(micro_model_dir))
    with torch.no_grad():
        for model in (adapted, _model(tmp_path / "merged"),
                      PeftModel.from_pretrained(_model(micro_model_dir), str(tmp_path / "merged" / "adapter"))):
            torch.testing.assert_close(torch.log_softmax(model(input_ids=ids).logits, dim=-1), want, atol=1e-5, rtol=0)
    engine.shutdown()
    learner.shutdown()


def _merged_logits(learner, model_dir, ids):
    """Logits of the plain model loaded with the learner's exported (merged) weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir)).eval()
    model.load_state_dict(learner.export_weights())
    return model(input_ids=ids).logits
