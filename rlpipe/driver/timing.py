"""``timing/<phase>`` metrics: each phase of a step is one call inside one ``timed`` block."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def timed(metrics: dict[str, float], phase: str) -> Iterator[None]:
    """Adds the block's wall time to ``timing/<phase>`` (accumulates when a phase runs several rounds)."""
    start = time.perf_counter()
    yield
    key = f"timing/{phase}"
    metrics[key] = metrics.get(key, 0.0) + time.perf_counter() - start
