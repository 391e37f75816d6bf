"""Padding-free packed forward passes, optionally with each prompt computed once for all the samples that continue it.

A micro-batch's tokens run through the model's linear layers as ONE flat stream ``[1, S]`` with no padding: with
``shared_prefix``, each distinct prompt once, then every response; with ``sequences``, every sample's prompt and
response (classic packing, position ids restarting per sequence). Only attention needs to know which token sees which:
a custom attention function (registered with transformers' ``AttentionInterface``) gathers each sample's keys and
queries — its prompt's tokens, then its own response's — into a row of a ``[N, W]`` batch, runs causal SDPA there, and
puts every token's output back at its place in the stream (a prompt token shared by several samples takes the output
of the first: all rows compute the same value for it, since a prompt token attends only to its prompt). Gradients sum
correctly by construction: a shared prompt's keys and values are gathered into several rows, so their gradients add
up over the samples that attended to them, exactly as in the padded layout where the prompt is repeated.

What it saves: linear layers and the MLP (most of the compute of a small or medium model) run over Σ prompts + Σ
responses tokens instead of N × (longest prompt + longest response); attention costs what it costs padded. With 8
samples per prompt and 20-token prompts under ~40-token answers (the default job), about a third of the tokens.

Works with any transformers model whose attention layers call ``ALL_ATTENTION_FUNCTIONS`` (Qwen2, Llama, Mistral,
...), on CPU and GPU, under FSDP2 and DeepSpeed (one forward call per micro-batch, as unpacked). Layout tensors are
built on the CPU by ``pack`` and moved with the batch. Equality with the padded layout: tests/learner/test_packing.py.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields, replace
from typing import Iterator, Optional, Sequence

import torch

PACKING_MODES = ("none", "sequences", "shared_prefix")
ATTENTION_NAME = "rlpipe_packed"
LAYOUT_KWARG = "rlpipe_packed_layout"
MASK_KWARG = "rlpipe_packed_mask"


@dataclass
class PackedLayout:
    """Where N samples' tokens sit in one flat stream of S tokens. T = longest response, W = longest prompt + response.

    input_ids     [1, S] long   the stream
    position_ids  [1, S] long   a prompt's tokens 0..p-1; its responses' p..p+r-1 (what the rollout engine saw)
    gather        [N, W] long   row i: the stream positions of sample i's prompt, then of its response (0 on padding)
    valid         [N, W] bool   False on a row's padding
    owner         [S]    long   for each stream token, the flat index (i * W + j) of the row cell whose output it takes
    predict       [N*T]  long   the stream position whose logits predict response token t of sample i (sample-major;
                                the last prompt token for t = 0), 0 on padding
    padded_index  [N, P+T] long the stream position of each cell of the padded layout (``build_batch``; P = longest
                                prompt), 0 on its padding: hidden states in that layout, for auxiliary heads
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    gather: torch.Tensor
    valid: torch.Tensor
    owner: torch.Tensor
    predict: torch.Tensor
    padded_index: torch.Tensor

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    def to(self, device: torch.device | str) -> "PackedLayout":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def row_mask(self) -> torch.Tensor:
        """[N, 1, W, W] bool: causal within each row, real keys only. Built once per forward (every layer reads it)
        and not kept: at long lengths it is the size of one layer's attention scores. A padding query still sees the
        row's first tokens (never an empty softmax); its output is never used."""
        w = self.gather.shape[1]
        causal = torch.ones((w, w), dtype=torch.bool, device=self.valid.device).tril()
        return (causal.unsqueeze(0) & self.valid.unsqueeze(1)).unsqueeze(1)


def pack(prompts: Sequence[Sequence[int]], prompt_of: Sequence[int], responses: Sequence[Sequence[int]],
         share_prefix: bool) -> PackedLayout:
    """The layout of N samples: sample i is ``prompts[prompt_of[i]] + responses[i]``. ``share_prefix``: each distinct
    prompt once in the stream; otherwise each sample's own copy (padding-free packing)."""
    n = len(responses)
    t = max(1, max((len(r) for r in responses), default=1))
    w = max(len(prompts[prompt_of[i]]) + len(responses[i]) for i in range(n))
    longest_prompt = max(len(prompts[k]) for k in prompt_of)
    padded_index = torch.zeros((n, longest_prompt + t), dtype=torch.long)
    stream: list[int] = []
    positions: list[int] = []
    owner: list[int] = []
    gather = torch.zeros((n, w), dtype=torch.long)
    valid = torch.zeros((n, w), dtype=torch.bool)
    predict = torch.zeros((n, t), dtype=torch.long)
    placed: dict[int, int] = {}  # prompt index -> where it starts in the stream (share_prefix)
    for i in range(n):
        prompt, response = prompts[prompt_of[i]], responses[i]
        p = len(prompt)
        if share_prefix and prompt_of[i] in placed:
            start = placed[prompt_of[i]]
        else:
            start = len(stream)
            placed[prompt_of[i]] = start
            stream.extend(prompt)
            positions.extend(range(p))
            owner.extend(i * w + j for j in range(p))
        first = len(stream)
        stream.extend(response)
        positions.extend(range(p, p + len(response)))
        owner.extend(i * w + p + j for j in range(len(response)))
        gather[i, :p] = torch.arange(start, start + p)
        gather[i, p: p + len(response)] = torch.arange(first, first + len(response))
        valid[i, : p + len(response)] = True
        padded_index[i, longest_prompt - p: longest_prompt] = gather[i, :p]
        padded_index[i, longest_prompt: longest_prompt + len(response)] = gather[i, p: p + len(response)]
        if response:
            predict[i, 0] = start + p - 1
            predict[i, 1: len(response)] = torch.arange(first, first + len(response) - 1)
    return PackedLayout(torch.tensor([stream], dtype=torch.long), torch.tensor([positions], dtype=torch.long), gather,
                        valid, torch.tensor(owner, dtype=torch.long), predict.flatten(), padded_index)


def packed_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: Optional[torch.Tensor], scaling: Optional[float] = None, dropout: float = 0.0,
                     **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature. query [1, H, S, d], key/value [1, H_kv, S, d] (already rotated);
    returns [1, S, H, d]. The layout and its row mask come in the forward call's kwargs (``LAYOUT_KWARG``,
    ``MASK_KWARG``)."""
    layout: PackedLayout = kwargs[LAYOUT_KWARG]
    for unsupported in ("sliding_window", "softcap"):
        if kwargs.get(unsupported) is not None:
            raise NotImplementedError(f"learner.packing: attention with {unsupported} is not supported (packing=none)")
    n, w = layout.gather.shape
    index = layout.gather.flatten()

    def rows(x: torch.Tensor) -> torch.Tensor:  # [1, h, S, d] -> [N, h, W, d]
        return x[0][:, index].view(x.shape[1], n, w, x.shape[-1]).transpose(0, 1)

    q, k, v = rows(query), rows(key), rows(value)
    if k.shape[1] != q.shape[1]:  # grouped-query attention: SDPA's masked GPU kernels take no enable_gqa
        k, v = (x.repeat_interleave(q.shape[1] // x.shape[1], dim=1) for x in (k, v))
    out = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=kwargs[MASK_KWARG], dropout_p=dropout if module.training else 0.0,
        scale=scaling)  # [N, H, W, d]
    out = out.transpose(1, 2).reshape(n * w, out.shape[1], out.shape[-1])  # [N*W, H, d]
    return out[layout.owner].unsqueeze(0), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, packed_attention)


@contextlib.contextmanager
def packed_attention_on(model: torch.nn.Module) -> Iterator[None]:
    """Route the model's attention layers through ``packed_attention`` for the duration (the config is shared by every
    layer; restored afterwards, so exports and unpacked calls never see it)."""
    _register()
    config = _config_of(model)
    before = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = before


def _config_of(model: torch.nn.Module):
    """The transformers config of the model, or of the model a wrapper holds (DeepSpeed's engine has a ``config`` of
    its own, a dict: the wrapped module's comes first)."""
    for candidate in (getattr(model, "module", None), model):
        config = getattr(candidate, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            return config
    raise TypeError(f"packed forward: {type(model).__name__} has no transformers config")


# transformers builds no mask for a 4D one it is given and passes it on: a [1, 1, 1, 1] placeholder keeps it from
# building an S × S causal mask that packed_attention would ignore.
def mask_placeholder(device: torch.device | str) -> torch.Tensor:
    return torch.ones((1, 1, 1, 1), dtype=torch.bool, device=device)
