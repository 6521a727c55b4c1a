"""The usage report as JSON rows and as CSV: the same rows, the same columns."""
from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from typing import Any

from apps.common import DomainError
from apps.usage.selectors import FIGURES, KEYS

DEFAULT_DAYS = 30
MAX_DAYS = 3660  # ten years of days in one report


def usage_columns(group_by: str) -> list[str]:
    return [*KEYS[group_by], *FIGURES, "total_tokens", "estimated_cost"]


def day_parse(value: str | None, name: str) -> date | None:
    """A `YYYY-MM-DD` parameter as a date; 400 `invalid_input` naming it when it is no day."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise DomainError("invalid_input", f"{name}: not a date (YYYY-MM-DD).") from None


def usage_range(date_from: date | None, date_to: date | None, *, today: date) -> tuple[date, date]:
    """The report's inclusive range of UTC days: `to` defaults to today, `from` to
    the 30 days ending at `to`. 400 `invalid_range` when from is after to or the
    range is longer than MAX_DAYS."""
    date_to = date_to or today
    try:
        date_from = date_from or date_to - timedelta(days=DEFAULT_DAYS - 1)
    except OverflowError:
        date_from = date.min
    if date_from > date_to:
        raise DomainError("invalid_range", "`from` must not be after `to`.")
    if (date_to - date_from).days >= MAX_DAYS:
        raise DomainError("invalid_range", f"A report covers at most {MAX_DAYS} days.")
    return date_from, date_to


def usage_rows_to_json(rows: list[dict[str, Any]], group_by: str) -> list[dict[str, Any]]:
    columns = usage_columns(group_by)
    return [{c: (row[c].isoformat() if isinstance(row[c], date) else row[c]) for c in columns} for row in rows]


def usage_rows_to_csv(rows: list[dict[str, Any]], group_by: str) -> str:
    """A header row, then one line per JSON row; an empty cell for a null (no price)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    columns = usage_columns(group_by)
    writer.writerow(columns)
    for row in usage_rows_to_json(rows, group_by):
        writer.writerow(["" if row[c] is None else row[c] for c in columns])
    return out.getvalue()


def usage_days(day_rows: list[dict[str, Any]], start: date, end: date) -> list[dict[str, Any]]:
    """Every day of the range, a day without runs as zeros (for a chart)."""
    by_day = {row["day"]: row for row in day_rows}
    zero = {f: 0 for f in (*FIGURES, "total_tokens")}
    return [by_day.get(d, {"day": d, **zero}) for d in
            ((start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1))]


def usage_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The sums of a report's rows; the cost is None when no row has one."""
    totals: dict[str, Any] = {f: sum(r[f] for r in rows) for f in (*FIGURES, "total_tokens")}
    costs = [r["estimated_cost"] for r in rows if r["estimated_cost"] is not None]
    totals["estimated_cost"] = round(sum(costs), 6) if costs else None
    return totals
