from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template
from django.utils.html import format_html

from apps.schedules.models import Schedule
from apps.schedules.presenters import in_zone, interval_parts, schedule_state

register = template.Library()


@register.filter
def get_item(mapping: dict[str, Any] | None, key: str) -> Any:
    return (mapping or {}).get(key)


# schedules: how the pages show a schedule's timing, state and times
@register.filter
def every(seconds: int | None) -> str:
    """An interval in the largest unit that divides it: 900 is "every 15 min"."""
    if not seconds:
        return ""
    count, unit = interval_parts(seconds)
    return f"every {count} {unit}"


@register.filter
def local_time(value: datetime | None, zone: str) -> str:
    """A time in the schedule's own timezone, the way its owner reads it ("Mon 2030-01-07 08:00 CET"),
    as a <time> with its offset; seconds only when there are some (an interval's times)."""
    if value is None:
        return ""
    local = in_zone(value, zone)
    text = local.strftime("%a %Y-%m-%d %H:%M" + (":%S" if local.second else "") + " %Z")
    return format_html('<time datetime="{}">{}</time>', local.isoformat(), text)


@register.filter
def state(schedule: Schedule) -> str:
    """active, paused or ended: the API's `state`."""
    return schedule_state(schedule)
