"""Reads of the usage rollup: a user's figures over a range of UTC days, one
row per day, agent or model, with an estimated cost from the price table.

Each report is one statement over `usage_usagedaily`, filtered on the user and
the day range, which is a range scan of the unique key's index (user, day, ...)
whatever the number of messages (tests/test_usage.py EXPLAINs it)."""
from __future__ import annotations

from datetime import date
from typing import Any

from django.conf import settings
from django.db import connection

FIGURES = ("runs", "model_calls", "tool_calls", "input_tokens", "output_tokens", "duration_ms")
KEYS: dict[str, tuple[str, ...]] = {"day": ("day",), "agent": ("agent_id",), "model": ("provider", "model")}
_KEY_SQL = {"day": "day", "agent": "agent_public_id AS agent_id", "model": "NULL AS _unused"}

# one statement for every grouping: the sums per (group, provider, model), so the
# cost is priced per model and then added up per group in Python (a few rows)
_REPORT_SQL = """
SELECT {key}, provider, model, {sums}
  FROM usage_usagedaily
 WHERE user_id = %(user_id)s AND day >= %(from)s AND day <= %(to)s
 GROUP BY {group} provider, model
"""


def report_sql(group_by: str) -> str:
    group = {"day": "day,", "agent": "agent_public_id,", "model": ""}[group_by]
    return _REPORT_SQL.format(key=_KEY_SQL[group_by], sums=", ".join(f"SUM({f})" for f in FIGURES), group=group)


def price_of(provider: str, model: str, input_tokens: int, output_tokens: int) -> float | None:
    """The estimated cost from AGENTOS_PRICES (per million tokens, keyed `provider:model`), or None."""
    price = settings.AGENTOS_PRICES.get(f"{provider}:{model}")
    if price is None:
        return None
    return (input_tokens * float(price.get("input", 0)) + output_tokens * float(price.get("output", 0))) / 1_000_000


def usage_report(*, user_id: int, date_from: date, date_to: date, group_by: str) -> list[dict[str, Any]]:
    """One row per group, ordered by its key: the group's key columns (`day`;
    `agent_id`; `provider`, `model`), the figures, `total_tokens` and
    `estimated_cost` (the sum over the group's priced models; None when none of
    them has a price)."""
    with connection.cursor() as cursor:
        cursor.execute(report_sql(group_by), {"user_id": user_id, "from": date_from, "to": date_to})
        fetched = cursor.fetchall()
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for key_value, provider, model, *sums in fetched:
        key = {"day": (key_value,), "agent": (key_value,), "model": (provider, model)}[group_by]
        row = rows.get(key)
        if row is None:
            row = rows[key] = {**dict(zip(KEYS[group_by], key)), **{f: 0 for f in FIGURES}, "estimated_cost": None}
        for name, value in zip(FIGURES, sums):
            row[name] += int(value or 0)
        cost = price_of(provider, model, int(sums[3] or 0), int(sums[4] or 0))
        if cost is not None:
            row["estimated_cost"] = (row["estimated_cost"] or 0.0) + cost
    result = []
    for key in sorted(rows):
        row = rows[key]
        row["total_tokens"] = row["input_tokens"] + row["output_tokens"]
        if row["estimated_cost"] is not None:
            row["estimated_cost"] = round(row["estimated_cost"], 6)
        result.append(row)
    return result
