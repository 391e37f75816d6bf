"""The calculator tool: exact results, and refusals (never code execution) as ToolErrors the model can read."""

from __future__ import annotations

import pytest

from rlpipe.agents.calculator import Calculator
from rlpipe.agents.tools import ToolError, build_tool


@pytest.mark.parametrize("expression,shown", [
    ("347 * 28", "9716"), ("(2 + 3) * -4", "-20"), ("7 / 2", "3.5"), ("8 / 2", "4"), ("7 // 2", "3"),
    ("-7 % 3", "2"), ("2 ** 10", "1024"), ("123456789 * 987654321", "121932631112635269"), (" 1 + 1 ", "2"),
])
def test_exact_results(expression, shown):
    assert Calculator().call({"expression": expression}) == shown


@pytest.mark.parametrize("arguments,message", [
    ({"expression": "__import__('os').system('true')"}, "only numbers"),
    ({"expression": "x + 1"}, "only numbers"),
    ({"expression": "1 / 0"}, "division by zero"),
    ({"expression": "9 ** 9 ** 9"}, "exponent"),
    ({"expression": "10 ** 60 * 10 ** 60"}, "more than 100 digits"),
    ({"expression": "2 +"}, "cannot parse"),
    ({"expression": "1" * 300}, "longer than"),
    ({"expr": "1 + 1"}, "need a string 'expression'"),
    ({"expression": "(-8) ** 0.5"}, "not a real number"),
])
def test_refusals_are_tool_errors(arguments, message):
    with pytest.raises(ToolError, match=message):
        Calculator().call(arguments)


def test_the_registry_builds_tools_by_name_and_lists_the_valid_ones():
    assert build_tool("calculator").call({"expression": "6 * 7"}) == "42"
    with pytest.raises(ValueError, match="calculator, python"):
        build_tool("abacus")
