"""Where per-step metrics go. console and jsonl are always on; wandb and tensorboard by ``logger.backends``."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Protocol, Sequence

log = logging.getLogger("rlpipe")
SINK_NAMES = ("console", "jsonl", "wandb", "tensorboard")
WANDB_MODES = ("online", "offline", "disabled")


class MetricSink(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """One JSON object per line: ``{"step": k, ...metrics}``. Written and flushed every step (crash-safe)."""

    def __init__(self, path: Path):
        self.path = path
        self._f = open(path, "a", encoding="utf-8")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: _json_number(v) for k, v in metrics.items()}}
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _json_number(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


class ConsoleSink:
    """A short line per logged step with the headline numbers (the progress bar carries the rest)."""

    KEYS = ("rollout/reward_mean", "eval/accuracy", "actor/pg_loss", "actor/kl", "rollout/response_len",
            "sft/loss", "eval/loss", "prefer/loss", "prefer/pairs", "eval/response_len")
    LABELS = {"eval/loss": "heldout_loss", "eval/response_len": "heldout_len"}  # names the short form would repeat

    def log(self, step: int, metrics: dict[str, float]) -> None:
        parts = [f"{self.LABELS.get(k, k.split('/')[-1])}={metrics[k]:.4g}" for k in self.KEYS if k in metrics]
        seconds = metrics.get("timing/step", sum(v for k, v in metrics.items() if k.startswith("timing/")))
        log.info("step %d: %s  (%.1fs)", step, "  ".join(parts), seconds)

    def close(self) -> None:
        pass


class WandbSink:
    def __init__(self, project: str, mode: str, run_dir: Path, config: dict):
        import wandb

        self._wandb = wandb
        self.run = wandb.init(project=project, mode=mode, dir=str(run_dir), config=config)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class TensorboardSink:
    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Sinks:
    def __init__(self, sinks: Sequence[MetricSink]):
        self.sinks = list(sinks)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for s in self.sinks:
            s.log(step, metrics)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


def build_sinks(backends: Sequence[str], run_dir: Path, *, wandb_project: str, wandb_mode: str,
                config: dict, console: bool) -> Sinks:
    sinks: list[MetricSink] = [JsonlSink(run_dir / "metrics.jsonl")]
    if console:
        sinks.append(ConsoleSink())
    if "wandb" in backends:
        sinks.append(WandbSink(wandb_project, wandb_mode, run_dir, config))
    if "tensorboard" in backends:
        sinks.append(TensorboardSink(run_dir / "tensorboard"))
    return Sinks(sinks)
