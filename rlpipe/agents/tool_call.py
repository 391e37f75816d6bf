"""The tool-call format: Hermes / Qwen2.5's ``<tool_call>{json}</tool_call>`` inside an assistant turn.

    <tool_call>{"name": "calculator", "arguments": {"expression": "347 * 28"}}</tool_call>

A turn may hold several calls; they run in order. What the tool returns comes back to the model as the next turn,
in the ``tool`` role of the model's own chat template (rlpipe.rollout.multi_turn.ObservationRenderer).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from rlpipe.agents.tools import ToolError

TOOL_CALL_START, TOOL_CALL_END = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(TOOL_CALL_START) + r"(.*?)" + re.escape(TOOL_CALL_END), re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


def format_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """The text of one call, as the model writes it (the warm-start's traces are written with this)."""
    return TOOL_CALL_START + json.dumps({"name": name, "arguments": arguments}) + TOOL_CALL_END


def find_tool_calls(turn: str) -> list[str]:
    """The JSON bodies of the complete calls in ``turn``, in order (an unclosed ``<tool_call>`` is not a call)."""
    return _CALL.findall(turn)


def parse_tool_call(body: str) -> ToolCall:
    """A call's JSON body -> ToolCall; malformed ones raise ToolError (the model sees the message and may retry)."""
    try:
        value = json.loads(body)
    except json.JSONDecodeError as e:
        raise ToolError(f"tool call is not JSON ({e.msg})") from None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ToolError('tool call must be {"name": ..., "arguments": {...}}')
    arguments = value.get("arguments", {})
    if not isinstance(arguments, dict):
        raise ToolError("tool call 'arguments' must be an object")
    return ToolCall(value["name"], arguments)
