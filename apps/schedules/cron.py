"""Cron expressions: parsing, and the instants at which one fires in a timezone.

Five whitespace-separated fields, minute hour day-of-month month day-of-week, each a comma
list of `*`, `n`, `a-b`, `*/n`, `a-b/n` or `a/n` (a to the field's maximum). Months may be
named jan-dec and weekdays sun-sat (any case, in ranges too). Day-of-week 0 and 7 are Sunday;
`*` and `a/n` span 0-6, and `sun` ending a range is 7 (`fri-sun`). Macros: @yearly, @annually,
@monthly, @weekly, @daily, @midnight, @hourly. Refused: @reboot, and an expression naming no
existing day ("0 0 31 2 *"). When both day fields are restricted (neither starts with `*`) a
day matches if either does, otherwise if both do, as in cron(8).

Times are wall-clock times in the timezone, kept across daylight-saving changes as cron(8)
(Vixie/cronie) keeps them. A fixed-time job (neither the minute nor the hour field starts
with `*`) fires once when a spring-forward gap ends if any of its times fell in the gap, and
at the first occurrence only of a time a fall-back repeats. A wildcard job (`*/15 * * * *`,
@hourly, `15 */2 * * *`) follows the clock: no time in the gap, both occurrences of a repeat.
"""
from __future__ import annotations

import re
from bisect import bisect_left
from calendar import monthrange
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# cron(8) treats a clock set back by less than this as a repeated time; a naive time this far
# from an instant cannot map to an instant on the other side of it (offsets change by less)
FOLD_WINDOW = timedelta(hours=3)
# how far ahead the next time is looked for: 28 years hold every date on every weekday
# (1901-2099), so an expression that cron_parse accepts always has a next time; a rare
# one such as "0 0 29 2 1" (February 29 that is a Monday) fires next up to 28 years on
HORIZON_YEARS = 28
ZERO = timedelta(0)
MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
# the shape of an IANA key, before ZoneInfo's own checks: no dot ("..", zone.tab), nothing absolute
ZONE_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*")


class CronError(ValueError):
    """An expression or timezone that cannot be used; the message says why."""


@dataclass(frozen=True)
class Cron:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday .. 6
    day_restricted: bool
    weekday_restricted: bool
    wildcard_time: bool  # cron(8)'s "wildcard job": follows the clock through DST changes


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    star_high: int  # where `*` and `a/n` end: day-of-week's 7 is only an alias
    names: dict[str, int]


FIELDS = (
    _Field("minute", 0, 59, 59, {}),
    _Field("hour", 0, 23, 23, {}),
    _Field("day-of-month", 1, 31, 31, {}),
    _Field("month", 1, 12, 12, dict(zip("jan feb mar apr may jun jul aug sep oct nov dec".split(), range(1, 13)))),
    _Field("day-of-week", 0, 7, 6, dict(zip("sun mon tue wed thu fri sat".split(), range(7)))),
)


def _error(spec: _Field, reason: str) -> CronError:
    return CronError(f"{spec.name} field: {reason}")


def _value(text: str, spec: _Field, item: str) -> int:
    if not text:
        raise _error(spec, f"{item!r} is missing a number")
    if text.lower() in spec.names:
        return spec.names[text.lower()]
    if not (text.isascii() and text.isdigit()):  # str.isdigit() alone accepts "²", which int() refuses
        names = list(spec.names)
        named = f" or a name ({names[0]}-{names[-1]})" if names else ""
        raise _error(spec, f"{text!r} is not a number{named}")
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise _error(spec, f"{value} is out of range {spec.low}-{spec.high}")
    return value


def _parse_field(text: str, spec: _Field) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _error(spec, f"empty item in {text!r}")
        base, slash, step_text = item.partition("/")
        if slash and not (step_text.isascii() and step_text.isdigit()):
            raise _error(spec, f"step {step_text!r} in {item!r} is not a number")
        step = int(step_text) if slash else 1
        if step == 0:
            raise _error(spec, f"step 0 in {item!r} never advances")
        if base == "*":
            low, high = spec.low, spec.star_high
        elif "-" in base:
            start, _, end = base.partition("-")
            low, high = _value(start, spec, item), _value(end, spec, item)
            if spec.name == "day-of-week" and end.lower() == "sun" and low > 0:
                high = 7  # "fri-sun": Sunday as the end of the week
            if low > high:
                raise _error(spec, f"range {base!r} is reversed (ranges do not wrap around)")
        else:
            low = _value(base, spec, item)
            high = max(low, spec.star_high) if slash else low
        values.update(range(low, high + 1, step))
    return frozenset(values)


def cron_parse(expression: str) -> Cron:
    """The parsed expression; CronError says what is wrong with one that cannot run."""
    expression = expression.strip()
    if not expression:
        raise CronError("empty expression")
    text = MACROS.get(expression.lower(), expression)
    if text.lower() == "@reboot":
        raise CronError("@reboot is not supported: a schedule fires at times, not at a boot")
    if text.startswith("@"):
        raise CronError(f"unknown macro {text!r} (known: {', '.join(MACROS)})")
    parts = text.split()
    if len(parts) != len(FIELDS):
        raise CronError(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}")
    minutes, hours, days, months, weekdays = (_parse_field(p, spec) for p, spec in zip(parts, FIELDS))
    cron = Cron(
        expression=expression, minutes=minutes, hours=hours, days=days, months=months,
        weekdays=frozenset(day % 7 for day in weekdays),
        day_restricted=not parts[2].startswith("*"), weekday_restricted=not parts[4].startswith("*"),
        wildcard_time=parts[0].startswith("*") or parts[1].startswith("*"),
    )
    # 28 years from a leap year hold every date on every weekday (1901-2099), so an
    # expression that fires at all fires in them; "0 0 29 2 *" does, "0 0 30 2 *" never
    if _next(cron, datetime(2000, 1, 1, tzinfo=UTC), UTC, years=28) is None:
        raise CronError(f"never fires: {expression!r} names no day that exists")
    return cron


def tz_parse(name: str) -> ZoneInfo:
    """The IANA timezone `name` ("Europe/Paris", "UTC")."""
    if not ZONE_KEY.fullmatch(name):
        raise CronError(f"unknown timezone: {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory such as "America"
        raise CronError(f"unknown timezone: {name!r}") from None


def _day_matches(cron: Cron, day: date) -> bool:
    in_month = day.day in cron.days
    in_week = (day.weekday() + 1) % 7 in cron.weekdays  # date.weekday() counts from Monday
    if cron.day_restricted and cron.weekday_restricted:
        return in_month or in_week
    return in_month and in_week


def _candidates(cron: Cron, start: datetime, last: date) -> Iterator[datetime]:
    """Naive wall-clock times matching the fields, from `start` on, through the day `last`:
    matching months, their matching days, then hours and minutes (never minute by minute)."""
    hours, minutes = sorted(cron.hours), sorted(cron.minutes)
    year, month, first = start.year, start.month, start.day
    while (year, month) <= (last.year, last.month):
        if month in cron.months:
            for day in range(first, monthrange(year, month)[1] + 1):
                current = date(year, month, day)
                if current > last:
                    return
                if not _day_matches(cron, current):
                    continue
                from_hour = bisect_left(hours, start.hour) if current == start.date() else 0
                for hour in hours[from_hour:]:
                    for minute in minutes:
                        candidate = datetime(year, month, day, hour, minute)
                        if candidate >= start:
                            yield candidate
        year, month, first = (year + 1, 1, 1) if month == 12 else (year, month + 1, 1)


def _offset(timestamp: float, tz: tzinfo) -> timedelta:
    return datetime.fromtimestamp(timestamp, tz).utcoffset() or ZERO  # never None: aware


def _window(tz: tzinfo, start: datetime) -> timedelta:
    """FOLD_WINDOW if the offset drops (a fall-back) within it from `start`, else nothing."""
    end = start + FOLD_WINDOW
    return FOLD_WINDOW if _offset(end.timestamp(), tz) < _offset(start.timestamp(), tz) else ZERO


def _gap_end(first: datetime, second: datetime, tz: tzinfo) -> datetime:
    """The instant a spring-forward gap holding a naive time ends. For a skipped time, fold=0
    reads it with the offset before the change (an instant after the change) and fold=1 with
    the offset after it (an instant before): the change lies between, found to the second."""
    low, high = int(second.timestamp()), int(first.timestamp())
    before = _offset(low, tz)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if _offset(middle, tz) == before else (low, middle)
    return datetime.fromtimestamp(high, UTC)


def _instants(naive: datetime, tz: tzinfo, wildcard: bool) -> list[datetime]:
    """The UTC instants at which a matching wall-clock time fires (see the module docstring)."""
    first, second = naive.replace(tzinfo=tz), naive.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return [first.astimezone(UTC)]
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive:  # skipped by a spring-forward
        return [] if wildcard else [_gap_end(first, second, tz)]
    # repeated by a fall-back
    return [first.astimezone(UTC), second.astimezone(UTC)] if wildcard else [first.astimezone(UTC)]


def _next(cron: Cron, after: datetime, tz: tzinfo, years: int) -> datetime | None:
    if after.utcoffset() is None:
        raise ValueError("after must be an aware datetime")
    after = after.astimezone(UTC)
    local = after.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)
    last = (local + timedelta(days=365 * years + years // 4 + 1)).date()
    # Wall-clock order is instant order except around a fall-back: then a time earlier on the
    # clock than `after` may come later (its second occurrence), and one later on the clock than
    # the best found may come earlier. Look FOLD_WINDOW beyond either end only when the offset
    # drops there (offsets change at most once in 3 hours), so that the common case stays cheap:
    # a catch-up walk over thousands of every-minute times calls this once per time.
    back = _window(tz, after)
    best: datetime | None = None
    stop: datetime | None = None
    for naive in _candidates(cron, local - back, last):
        if stop is not None and naive > stop:
            break
        for instant in _instants(naive, tz, cron.wildcard_time):
            if instant > after and (best is None or instant < best):
                best = instant
                stop = best.astimezone(tz).replace(tzinfo=None) + _window(tz, best - FOLD_WINDOW)
    return best


def cron_next(cron: Cron, *, after: datetime, tz: ZoneInfo) -> datetime | None:
    """The first instant strictly after `after` (aware, any timezone) at which `cron` fires in
    `tz`, in UTC; None if it does not fire within HORIZON_YEARS."""
    return _next(cron, after, tz, HORIZON_YEARS)


def cron_times(cron: Cron, *, after: datetime, tz: ZoneInfo, count: int) -> list[datetime]:
    """The next `count` instants (fewer if it stops firing), for a preview."""
    times: list[datetime] = []
    while len(times) < count and (upcoming := cron_next(cron, after=times[-1] if times else after, tz=tz)):
        times.append(upcoming)
    return times
