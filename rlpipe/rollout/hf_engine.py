"""Transformers ``generate`` as a fallback rollout engine (``rollout.engine=hf``): slower, no vLLM needed."""

from __future__ import annotations

from array import array
from typing import Sequence

import torch

from rlpipe.rollout.budget import ThinkingBudgetProcessor, ThinkTokens, prompt_thought, zero_forced_logprob
from rlpipe.rollout.types import Completion, GenerationRequest, SamplingSettings


class HFEngine:
    def __init__(self, model_path: str, *, seed: int = 0, dtype: str = "float32", **_ignored_vllm_options):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(self.device)
        self.model.eval()
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        self.think = ThinkTokens.of(self.tokenizer)

    def _budget(self, req: GenerationRequest, sampling: SamplingSettings) -> list:
        """The logits processors that force budget ends (none without a budget)."""
        if sampling.thinking_budget_tokens is None:
            return []
        if self.think is None:
            raise ValueError("rollout.thinking_budget_tokens needs <think> and </think> as single tokens of the "
                             "model's tokenizer")
        return [ThinkingBudgetProcessor(self.think, sampling.thinking_budget_tokens, len(req.prompt_ids),
                                        prompt_thought(req.prompt_ids, self.think))]

    @torch.no_grad()
    def _generate_one(self, req: GenerationRequest, sampling: SamplingSettings) -> list[Completion]:
        # One request at a time with its own generator seed: results do not depend on batching.
        from transformers import LogitsProcessorList

        torch.manual_seed(req.seed)
        greedy = sampling.temperature <= 0
        input_ids = torch.tensor([list(req.prompt_ids)] * req.num_samples, device=self.device)
        out = self.model.generate(
            logits_processor=LogitsProcessorList(self._budget(req, sampling)),
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            top_k=None,
            max_new_tokens=sampling.response_limit if req.max_new_tokens is None else req.max_new_tokens,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        prompt_len = input_ids.shape[1]
        new_tokens = out.sequences[:, prompt_len:]  # [G, T']
        logits = torch.stack(out.logits, dim=1).float()  # [G, T', V]
        if not greedy:
            logits = logits / sampling.temperature
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        completions = []
        for k in range(req.num_samples):
            ids = new_tokens[k].tolist()
            stopped = self.eos_id in ids
            length = ids.index(self.eos_id) + 1 if stopped else len(ids)
            ids = ids[:length]
            sampled = array("f", logprobs[k, :length].tolist())
            if sampling.thinking_budget_tokens is not None:
                zero_forced_logprob(ids, sampled, self.think, prompt_thought(req.prompt_ids, self.think),
                                    sampling.thinking_budget_tokens)
            completions.append(
                Completion(
                    request_id=req.request_id,
                    sample_index=k,
                    response_ids=ids,
                    logprobs=sampled,
                    finish_reason="stop" if stopped else "length",
                    text=self.tokenizer.decode(ids, skip_special_tokens=True),
                )
            )
        return completions

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingSettings) -> list[Completion]:
        return [c for req in requests for c in self._generate_one(req, sampling)]

    def load_weights(self, named_tensors: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(named_tensors, strict=False)
        self.model.tie_weights()

    def sleep(self) -> None:
        pass

    def wake_up(self) -> None:
        pass
