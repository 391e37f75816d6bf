"""LoRA on the learner (``model.lora``): adapters injected into the policy with peft, the reference as the same module
with its adapters switched off, and the two ways weights leave the rank (merged full weights for the engines and
Hugging Face; a peft adapter directory).

LoRA (Hu et al. 2021, arXiv 2106.09685, eq. 3): a target linear layer computes W x + (alpha / r) B A x, with W frozen,
A [r, in] and B [out, r] trained, B = 0 at the start (so step 0 is the base model). Merged: W' = W + (alpha / r) B A.

peft's ``inject_adapter_in_model`` puts the adapter layers into the Hugging Face module itself (no PeftModel wrapper),
so the backends shard, checkpoint and run it like any other model: module names gain ``.base_layer`` (the frozen
linear) and ``.lora_A.default`` / ``.lora_B.default`` (the adapter).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

ADAPTER = "default"  # peft's adapter name; the only adapter a policy carries


def is_adapter(name: str) -> bool:
    """Whether a parameter / state-dict key belongs to an adapter (peft's ``lora_A`` / ``lora_B``)."""
    return ".lora_" in name


@dataclass(frozen=True)
class LoraSettings:
    """``model.lora``: rank r (> 0), alpha, dropout, the names of the linear layers that get an adapter, and whether
    exports write merged full weights beside the adapter."""

    rank: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]
    export_merged: bool

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


def _peft_config(settings: LoraSettings, **extra):
    from peft import LoraConfig

    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.target_modules), bias="none", **extra)


def inject(module: torch.nn.Module, settings: LoraSettings) -> torch.nn.Module:
    """Add adapters to ``module`` in place and freeze everything else; returns the module."""
    from peft import inject_adapter_in_model

    module = inject_adapter_in_model(_peft_config(settings), module, adapter_name=ADAPTER)
    for name, param in module.named_parameters():
        param.requires_grad_(is_adapter(name))
    if not any(p.requires_grad for p in module.parameters()):
        raise ValueError(f"model.lora.target_modules={list(settings.target_modules)} matched no linear layer")
    return module


@contextmanager
def adapters_disabled(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The base model: ``module`` with every adapter switched off for the block (the KL reference, no second copy)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield module
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def merge_state(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """A LoRA module's full state dict -> the plain model's, with W' = W + scaling · B A in each adapted layer.

    Keys ``<layer>.base_layer.<p>`` become ``<layer>.<p>``; ``<layer>.lora_A.default.weight`` [r, in] and
    ``<layer>.lora_B.default.weight`` [out, r] are folded into ``<layer>.weight`` [out, in] (in float32, then cast
    back) and dropped.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not is_adapter(key):
            out[key.replace(".base_layer.", ".")] = value
    for key, a in state.items():
        if not key.endswith(f".lora_A.{ADAPTER}.weight"):
            continue
        layer = key[: -len(f".lora_A.{ADAPTER}.weight")]
        b = state[f"{layer}.lora_B.{ADAPTER}.weight"]
        w = out[f"{layer}.weight"]
        out[f"{layer}.weight"] = (w.float() + scaling * (b.float() @ a.float())).to(w.dtype)
    return out


def adapter_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter's tensors in peft's file layout (``base_model.model.<layer>.lora_A.weight``), from a full state."""
    return {f"base_model.model.{key.replace(f'.{ADAPTER}.', '.')}": value
            for key, value in state.items() if is_adapter(key)}


def save_adapter(path: str, state: dict[str, torch.Tensor], settings: LoraSettings, base_model_path: str) -> None:
    """A peft adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``), loadable with
    ``peft.PeftModel.from_pretrained(base, path)``."""
    from safetensors.torch import save_file

    os.makedirs(path, exist_ok=True)
    _peft_config(settings, task_type="CAUSAL_LM", base_model_name_or_path=base_model_path).save_pretrained(path)
    save_file({k: v.contiguous() for k, v in adapter_state(state).items()},
              os.path.join(path, "adapter_model.safetensors"))


def lora_metrics(module: torch.nn.Module) -> dict[str, float]:
    """What LoRA trains and moves, per step, from the module before a backend wraps it: trainable parameters, their
    AdamW state, and the bytes of a weight push — merged full weights (what rlpipe pushes) against the adapter alone."""
    params = list(module.named_parameters())
    trainable = sum(p.numel() for _, p in params if p.requires_grad)
    adapter = sum(p.numel() * p.element_size() for n, p in params if is_adapter(n))
    merged = sum(p.numel() * p.element_size() for n, p in params if not is_adapter(n))
    if getattr(module.config, "tie_word_embeddings", False):  # the push spells out lm_head.weight
        merged += sum(p.numel() * p.element_size() for n, p in params if n.endswith("embed_tokens.weight"))
    return {"lora/trainable_params": float(trainable), "lora/total_params": float(sum(p.numel() for _, p in params)),
            "lora/optimizer_state_bytes": float(2 * 4 * trainable),  # AdamW: two float32 moments each
            "sync/merged_push_bytes": float(merged), "sync/adapter_push_bytes": float(adapter)}
