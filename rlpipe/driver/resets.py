"""When to reset the reference policy to the current one (ProRL, arXiv 2505.24864 §2.3): on a fixed interval, when
the measured KL to the reference grows past a threshold, or when held-out accuracy stops improving."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional


@dataclass
class ResetPolicy:
    interval_steps: int = 0
    kl_threshold: float = 0.0
    plateau_evals: int = 0
    reset_optimizer: bool = True
    # state (checkpointed): when the last reset happened, the accuracy plateau tracker, every reset with its cause
    last_reset_step: int = 0
    best_accuracy: float = -math.inf
    evals_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return bool(self.interval_steps or self.kl_threshold or self.plateau_evals)

    def cause(self, step: int, metrics: dict[str, float]) -> Optional[str]:
        """The reason to reset after ``step`` given its metrics, or None. Updates the plateau tracker."""
        if "eval/accuracy" in metrics:
            if metrics["eval/accuracy"] > self.best_accuracy:
                self.best_accuracy, self.evals_without_improvement = metrics["eval/accuracy"], 0
            else:
                self.evals_without_improvement += 1
        if self.interval_steps and step - self.last_reset_step >= self.interval_steps:
            return "interval"
        if self.kl_threshold and metrics.get("actor/kl", 0.0) > self.kl_threshold:
            return "kl_threshold"
        if self.plateau_evals and self.evals_without_improvement >= self.plateau_evals:
            return "accuracy_plateau"
        return None

    def record(self, step: int, cause: str, kl_before: float) -> dict[str, Any]:
        event = {"step": step, "cause": cause, "kl_before": kl_before, "reset_optimizer": self.reset_optimizer}
        self.history.append(event)
        self.last_reset_step = step
        self.evals_without_improvement = 0
        return event

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)
