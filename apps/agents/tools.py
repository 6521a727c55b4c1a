"""The registry of vetted tools an agent may name (nothing else can be attached),
and each tool's policy on an agent:

- `auto` (the default): the tool runs the moment the model asks for it;
- `approve`: the run pauses before each call until a person approves it (with
  arguments they may edit) or rejects it (agno's `requires_confirmation`);
- `input`: the run pauses until a person supplies the call's arguments (agno's
  `requires_user_input`, every parameter a user-input field).

A paused run holds no worker: apps.jobs.actions stores it and continues it
after the decision."""
from __future__ import annotations

import ast
import inspect
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
    _refuse_unknown(names)


def _refuse_unknown(names: list[str]) -> None:
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise DomainError("unknown_tool",
                          f"unknown tool(s): {', '.join(unknown)}; available: {', '.join(sorted(TOOLS))}.")


POLICIES = ("auto", "approve", "input")


def validate_tool_policies(policies: object) -> None:
    if not isinstance(policies, dict) or not all(isinstance(k, str) for k in policies):
        raise DomainError("invalid_tool_policies", 'tool_policies must be an object such as {"calculator": "approve"}.')
    _refuse_unknown(list(policies))
    wrong = [name for name, policy in policies.items() if policy not in POLICIES]
    if wrong:
        raise DomainError("invalid_tool_policies",
                          f"the policy of {', '.join(wrong)} must be one of {', '.join(POLICIES)}.")


def tool_policy(policies: dict[str, str] | None, name: str) -> str:
    return (policies or {}).get(name, "auto")


def tool_functions(names: list[str], policies: dict[str, str] | None = None) -> list[Any]:
    """The agent's tools as agno takes them: a plain function for `auto`, an agno
    tool that pauses the run for the others."""
    from agno.tools import tool  # agno's import cost stays out of web processes, which validate but never build

    functions: list[Any] = []
    for name in names:
        if name not in TOOLS:
            continue
        policy = tool_policy(policies, name)
        if policy == "approve":
            functions.append(tool(requires_confirmation=True)(TOOLS[name]))
        elif policy == "input":
            fields = list(inspect.signature(TOOLS[name]).parameters)
            functions.append(tool(requires_user_input=True, user_input_fields=fields)(TOOLS[name]))
        else:
            functions.append(TOOLS[name])
    return functions
