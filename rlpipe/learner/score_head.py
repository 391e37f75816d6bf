"""XBai o4's SPRM score head on the policy's backbone: an auxiliary head (``rlpipe.learner.heads``).

The head reads the hidden states of one backbone layer (default the second-to-last) from the policy's own forward
pass, through a gradient scale (default 1e-4: the backbone feels the head's loss 10^4 times weaker than the policy
loss). It has its own AdamW; its gradients are averaged over the learner ranks by hand (it is a replica on every
rank, outside FSDP/DeepSpeed). The math is in ``rlpipe.algos.sprm``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from rlpipe.algos.sprm import scale_grad, sprm_loss, step_end_mask, trajectory_scores
from rlpipe.learner.batch import TrainBatch
from rlpipe.learner.heads import AUXILIARY_HEADS, Forward, ReplicatedHead

WEIGHTS_FILE, SETTINGS_FILE = "score_head.pt", "score_head.json"


@dataclass(frozen=True)
class ScoreHeadSettings:
    delimiter_ids: tuple[int, ...]
    think_start_id: Optional[int]
    think_end_id: Optional[int]
    layer: int
    lr: float
    grad_scale: float
    positive_weight: float
    coef: float
    dropout: float
    agreement_filter: bool
    exclude_format_failures: bool


def saved_score_head(model_dir: str) -> Optional[ScoreHeadSettings]:
    """The settings of a head exported beside a model (training with model.score_head.enabled), or None."""
    path = Path(model_dir) / SETTINGS_FILE
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    raw["delimiter_ids"] = tuple(raw["delimiter_ids"])
    raw.setdefault("exclude_format_failures", True)  # exports written before the field existed
    return ScoreHeadSettings(**raw)


class ScoreHead(torch.nn.Module):
    """``Linear(h, 2h) → ReLU → Dropout → Linear(2h, 1)``, as in the paper's code."""

    def __init__(self, hidden_size: int, dropout: float):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(hidden_size, 2 * hidden_size), torch.nn.ReLU(),
                                       torch.nn.Dropout(dropout), torch.nn.Linear(2 * hidden_size, 1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(hidden).squeeze(-1)


@AUXILIARY_HEADS.register("sprm")
class ScoreHeadTrainer(ReplicatedHead):
    """The head, its optimizer, and what the learner rank asks of an auxiliary head."""

    name = "sprm"
    weights_file, settings_file = WEIGHTS_FILE, SETTINGS_FILE

    def __init__(self, hidden_size: int, settings: ScoreHeadSettings, device: torch.device, seed: int):
        self.s = settings
        self.hidden_layer = settings.layer
        with torch.random.fork_rng(devices=[]):  # the head's init must not shift the policy's random stream
            torch.manual_seed(seed + 7919)
            self.head = self.module = ScoreHead(hidden_size, settings.dropout).to(device)
        self.optimizer = torch.optim.AdamW(self.head.parameters(), lr=settings.lr)

    def step_logits(self, hidden: torch.Tensor, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [N, T], scored-position mask [N, T]) from the chosen layer's hidden states [N, T, H] (at the
        response positions)."""
        p = batch.prompt_len
        logits = self.head(scale_grad(hidden.float(), self.s.grad_scale))
        mask = step_end_mask(batch.input_ids[:, p:].cpu(), batch.response_mask.cpu(), self.s.delimiter_ids,
                             self.s.think_start_id, self.s.think_end_id).to(logits.device)
        return logits, mask

    def loss(self, fwd: Forward, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        logits, mask = self.step_logits(fwd.hidden[self.hidden_layer], batch)
        loss, metrics = sprm_loss(logits, mask, self.labels(batch).to(logits.device), self.s.positive_weight,
                                  self.s.agreement_filter)
        return self.s.coef * loss, {"sprm/loss": float(loss.detach()), **{k: float(v) for k, v in metrics.items()}}

    @torch.no_grad()
    def scores(self, fwd: Forward, batch: TrainBatch) -> torch.Tensor:
        """[N] trajectory scores (geometric mean of step probabilities; 0 without a scored step)."""
        self.head.eval()
        logits, mask = self.step_logits(fwd.hidden[self.hidden_layer], batch)
        self.head.train()
        return trajectory_scores(logits, mask).cpu()
