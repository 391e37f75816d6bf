"""Tools an environment lets the model call: a plain class per tool, registered by name, one instance per rollout.

A tool call either returns the text the model sees next, or fails in one of two ways that must never be confused:

- ``ToolError``: the model's fault (bad arguments, its program raised, timed out or printed too much). The message
  becomes the observation, the rollout goes on, and the verifier later judges the answer as usual.
- ``ToolInfraError``: the tool could not run at all (no sandbox on this machine, no temp dir, out of processes). The
  rollout is dropped and counted, never scored: an infrastructure failure is not a wrong answer.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Protocol

from rlpipe.registry import Registry, import_object


class ToolError(Exception):
    """The call failed because of what the model asked for; ``str(error)`` is shown to the model."""


class ToolInfraError(RuntimeError):
    """The tool itself could not run; the rollout that called it is dropped and counted."""


class Tool(Protocol):
    name: str  # what the model writes in {"name": ...}
    description: str  # one line, for docs and system prompts

    def call(self, arguments: dict[str, Any]) -> str:
        """Run one call; returns the observation text. Raises ToolError or ToolInfraError."""
        ...

    def close(self) -> None:
        """Release what the rollout held (state, processes); the tool is not called again."""
        ...


TOOLS: Registry[Callable[..., Tool]] = Registry("tool")
register_tool = TOOLS.register  # @register_tool("calculator") makes build_tool("calculator", **options) build it
# rlpipe's own tools: name -> the module that registers it, imported when the tool is first asked for.
BUILTIN_TOOLS = {"calculator": "rlpipe.agents.calculator", "python": "rlpipe.agents.python_tool"}


def build_tool(name: str, **options: Any) -> Tool:
    """A tool by registered name, or by import path (``my_pkg.tools:Search``: a user's own class)."""
    if ":" in name:
        return import_object(name)(**options)
    if name not in TOOLS and name in BUILTIN_TOOLS:
        importlib.import_module(BUILTIN_TOOLS[name])
    if name not in TOOLS:
        raise ValueError(f"unknown tool {name!r}; valid: {', '.join(tool_names())} (or a 'package.module:Class')")
    return TOOLS.get(name)(**options)


def tool_names() -> list[str]:
    """Every tool that can be asked for by name: rlpipe's own and those registered so far."""
    return sorted(set(TOOLS) | set(BUILTIN_TOOLS))
