"""Typed access to the process environment (12-factor settings).

A `.env` file at the repository root is read first, without overriding what
the real environment already sets, so `manage.py` run by hand sees the same
configuration as `make run`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from dotenv import load_dotenv

ROOT_DIR = Path(__file__).resolve().parent.parent
load_dotenv(ROOT_DIR / ".env", override=False)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (use true/false)")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not an integer") from exc


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return float(raw)


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def parse_prices(raw: str) -> dict[str, dict[str, float]]:
    """AGENTOS_PRICES: `{"provider:model": {"input": USD, "output": USD}}` per million
    tokens; empty means no prices. Anything else is a startup error naming the setting."""
    if not raw.strip():
        return {}
    try:
        table = json.loads(raw)
        if not isinstance(table, dict):
            raise ValueError("not an object")
        return {str(key): {side: float(price.get(side, 0)) for side in ("input", "output")}
                for key, price in table.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"AGENTOS_PRICES={raw!r} is not a price table "
                         '(e.g. {"openai:gpt-4o": {"input": 2.5, "output": 10}})') from exc
