"""The calculator tool: exact arithmetic on one expression, parsed (never ``eval``-ed), with bounded sizes.

``{"name": "calculator", "arguments": {"expression": "347 * 28"}}`` -> ``9716``. Integers stay exact (Python ints);
``/`` gives a float unless the division is exact. Nothing but numbers, + - * / // % **, unary signs and
parentheses is accepted, so no call can run code, and the size limits keep ``9**9**9`` from eating the worker.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any

from rlpipe.agents.tools import ToolError, register_tool

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


@register_tool("calculator")
class Calculator:
    name = "calculator"
    description = "Evaluates one arithmetic expression exactly: numbers, + - * / // % **, parentheses."

    def __init__(self, *, max_expression_chars: int = 200, max_digits: int = 100, max_exponent: int = 64):
        self.max_expression_chars = max_expression_chars
        self.max_digits = max_digits
        self.max_exponent = max_exponent

    def call(self, arguments: dict[str, Any]) -> str:
        expression = arguments.get("expression") if isinstance(arguments, dict) else None
        if not isinstance(expression, str):
            raise ToolError("calculator: arguments need a string 'expression'")
        if len(expression) > self.max_expression_chars:
            raise ToolError(f"calculator: expression longer than {self.max_expression_chars} characters")
        try:
            tree = ast.parse(expression.strip(), mode="eval")
        except SyntaxError:
            raise ToolError(f"calculator: cannot parse {expression!r}") from None
        return _show(self._eval(tree.body))

    def _eval(self, node: ast.AST):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](self._eval(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self._eval(node.left), self._eval(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > self.max_exponent:
                raise ToolError(f"calculator: exponent {right} is above {self.max_exponent}")
            try:
                value = _BINARY[type(node.op)](left, right)
            except ZeroDivisionError:
                raise ToolError("calculator: division by zero") from None
            except OverflowError:
                raise ToolError("calculator: result too large") from None
            if isinstance(value, complex):
                raise ToolError("calculator: the result is not a real number")
            if isinstance(value, int) and abs(value) >= 10 ** self.max_digits:
                raise ToolError(f"calculator: result has more than {self.max_digits} digits")
            if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
                raise ToolError("calculator: result too large")
            return value
        raise ToolError(f"calculator: only numbers and + - * / // % ** are allowed, not {type(node).__name__}")

    def close(self) -> None:
        pass


def _show(value) -> str:
    """Exact integers as they are; a float that is a whole number as an integer (8 / 2 -> 4), else 12 digits."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value) if isinstance(value, int) else format(value, ".12g")
