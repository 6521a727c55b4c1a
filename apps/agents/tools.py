"""The registry of vetted tools an agent may name. Nothing else can be attached."""
from __future__ import annotations

import ast
import operator
from datetime import datetime
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apps.common import DomainError

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 100 or abs(left) > 1e6):
            raise ValueError("exponent too large")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    raise ValueError("only numbers and + - * / // % ** ( ) are allowed")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as `2 + 2 * 3`.

    Args:
        expression: the arithmetic expression to evaluate.
    """
    if len(expression) > 200:
        return "error: expression too long"
    try:
        value = _evaluate(ast.parse(expression.strip(), mode="eval"))
    except (ValueError, SyntaxError, ZeroDivisionError, OverflowError, TypeError) as exc:
        return f"error: {exc}"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def current_time(timezone: str = "UTC") -> str:
    """The current date and time, ISO 8601, in a time zone such as `Europe/Paris`.

    Args:
        timezone: an IANA time zone name; UTC when omitted.
    """
    try:
        zone = ZoneInfo(timezone.strip() or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return f"error: unknown time zone {timezone!r}"
    return datetime.now(zone).isoformat(timespec="seconds")


TOOLS: dict[str, Callable[..., str]] = {
    "calculator": calculator,
    "current_time": current_time,
}


def validate_tool_names(names: object) -> None:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DomainError("invalid_tools", "tools must be a list of tool names.")
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise DomainError("unknown_tool",
                          f"unknown tool(s): {', '.join(unknown)}; available: {', '.join(sorted(TOOLS))}.")


def tool_functions(names: list[str]) -> list[Callable[..., str]]:
    return [TOOLS[name] for name in names if name in TOOLS]
