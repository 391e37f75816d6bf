"""What the driver hands a learner rank besides its tensors: plain settings and the rendezvous address. Kept apart
from ``rank.py`` so the driver can build them without importing the rank's torch.distributed, FSDP2 and checkpoint
machinery (about a second of its start-up)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class CorrectionSettings:
    """Off-policy correction of the loss (``algorithm.rollout_correction*``; rlpipe.algos.offpolicy)."""

    mode: str
    threshold: float
    level: str


@dataclass(frozen=True)
class OptimizerSettings:
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    max_grad_norm: float


def free_port_address() -> tuple[str, int]:
    """This node's address and a free TCP port, for the rank-0 rendezvous."""
    addr = os.environ.get("RLPIPE_MASTER_ADDR", "127.0.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((addr, 0))
        return addr, s.getsockname()[1]
