"""Environments: what a multi-turn rollout talks to between the model's turns.

``reset()`` starts an episode whose first observation is the prompt (the task's messages, rendered by the driver
with the model's chat template); ``step(action) -> EnvStep`` takes the text of one finished assistant turn and
answers with the next observation (a tool's output), a reward added to the verifier's, and whether the episode is
over. Plain classes, registered by name (``rollout.environment``); a task declares the tools its environment offers
(``rollout.tools``).

The rollout side (rlpipe.rollout.multi_turn) owns the tokens: an environment sees and returns text, and never the
ids of earlier turns, so nothing is decoded and re-encoded on the way (docs/agents.md, "the token flow").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

from rlpipe.agents.tool_call import find_tool_calls, parse_tool_call
from rlpipe.agents.tools import Tool, ToolError, build_tool
from rlpipe.registry import Registry, import_object


@dataclass(frozen=True)
class EnvStep:
    observation: Optional[str]  # shown to the model as the next (tool) turn; None when done
    reward: float  # added to the verifier's reward for the whole rollout
    done: bool
    info: dict[str, float] = field(default_factory=dict)  # counters summed over the rollout (tool_calls, ...)


class Environment(Protocol):
    def reset(self) -> None:
        """Start an episode: the prompt is its first observation."""
        ...

    def step(self, action: str) -> EnvStep:
        """React to one assistant turn (its decoded text, ending where the model ended the turn)."""
        ...

    def close(self) -> None: ...


ENVIRONMENTS: Registry[Callable[..., Environment]] = Registry("environment")
register_environment = ENVIRONMENTS.register


def build_environment(name: str, **options: Any) -> Environment:
    """An environment by registered name, or by import path (``my_pkg.envs:Countdown``: a user's own class, imported
    in the rollout actor's process)."""
    if ":" in name:
        return import_object(name)(**options)
    if name not in ENVIRONMENTS:
        raise ValueError(f"unknown rollout.environment {name!r}; valid: {', '.join(ENVIRONMENTS.names())} (or a "
                         f"'package.module:Class')")
    return ENVIRONMENTS.get(name)(**options)


@register_environment("tools")
class ToolEnvironment:
    """Runs the tool calls of each assistant turn; a turn without one is the final answer (done).

    Each rollout gets its own instances of the tools (a Python session keeps its variables across the rollout's
    turns, and no other rollout's). A call that fails because of the model (bad JSON, an unknown tool, its program
    raised or timed out) is an observation, ``error: ...``; a ``ToolInfraError`` propagates: the rollout is dropped.
    """

    def __init__(self, tools: Sequence[str] = ("calculator",), tool_options: Optional[dict[str, dict]] = None):
        self.tool_names = tuple(tools)
        self.tool_options = dict(tool_options or {})
        self.tools: dict[str, Tool] = {}

    def reset(self) -> None:
        self.close()
        self.tools = {name: build_tool(name, **self.tool_options.get(name, {})) for name in self.tool_names}

    def step(self, action: str) -> EnvStep:
        bodies = find_tool_calls(action)
        if not bodies:
            return EnvStep(None, 0.0, True)
        outputs, errors = [], 0
        for body in bodies:
            try:
                call = parse_tool_call(body)
                if call.name not in self.tools:
                    raise ToolError(f"unknown tool {call.name!r}; available: {', '.join(self.tools)}")
                outputs.append(self.tools[call.name].call(call.arguments))
            except ToolError as e:
                errors += 1
                outputs.append(f"error: {e}")
        return EnvStep("\n".join(outputs), 0.0, False, {"tool_calls": float(len(bodies)), "tool_errors": float(errors)})

    def close(self) -> None:
        for tool in self.tools.values():
            tool.close()
        self.tools = {}
