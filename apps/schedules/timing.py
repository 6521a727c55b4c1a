"""When a schedule is due: its next time, and the due times a late tick passed.

A cron schedule's times are wall-clock times in its timezone, as cron(8) keeps them
across daylight-saving changes (apps.schedules.cron). An interval schedule's times
are elapsed time from its anchor (`starts_at`, or one interval after it was created),
the same in every timezone."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from apps.schedules.cron import Cron, cron_next, cron_parse, tz_parse

# counting missed cron times stops here: `missed` then says "at least this many"
MISSED_COUNT_CAP = 10_000


class Timed(Protocol):
    cron: str
    interval_seconds: int | None
    timezone: str
    starts_at: datetime | None
    ends_at: datetime | None
    created_at: datetime


def anchor(schedule: Timed) -> datetime:
    """An interval schedule's first time: `starts_at`, or one interval after it was created
    (on a whole second, as people write times)."""
    if schedule.starts_at is not None:
        return schedule.starts_at
    return schedule.created_at.replace(microsecond=0) + timedelta(seconds=schedule.interval_seconds or 0)


def _parsed(schedule: Timed) -> Cron:
    return cron_parse(schedule.cron)


def _next_unbounded(schedule: Timed, after: datetime, parsed: Cron | None = None) -> datetime | None:
    if schedule.interval_seconds:
        start, step = anchor(schedule), timedelta(seconds=schedule.interval_seconds)
        if after < start:
            return start
        return start + ((after - start) // step + 1) * step
    if schedule.starts_at is not None and after < schedule.starts_at:
        after = schedule.starts_at - timedelta(microseconds=1)  # starts_at itself may be a time
    return cron_next(parsed or _parsed(schedule), after=after, tz=tz_parse(schedule.timezone))


def next_due(schedule: Timed, *, after: datetime) -> datetime | None:
    """The first due time strictly after `after`; None if there is none before `ends_at`."""
    due = _next_unbounded(schedule, after)
    if due is None or (schedule.ends_at is not None and due > schedule.ends_at):
        return None
    return due


def upcoming(schedule: Timed, *, after: datetime, count: int) -> list[datetime]:
    """The next `count` due times (the web form's preview)."""
    times: list[datetime] = []
    parsed = None if schedule.interval_seconds else _parsed(schedule)
    due = _next_unbounded(schedule, after, parsed)
    while due is not None and len(times) < count and (schedule.ends_at is None or due <= schedule.ends_at):
        times.append(due)
        due = _next_unbounded(schedule, due, parsed)
    return times


def due_until(schedule: Timed, *, first: datetime, now: datetime) -> tuple[datetime, int]:
    """From the due time `first` (<= now): the latest due time at or before `now`, and how
    many due times came before it (the ones a late tick passed over)."""
    if schedule.interval_seconds:
        step = timedelta(seconds=schedule.interval_seconds)
        passed = (now - first) // step
        latest = first + passed * step
        if schedule.ends_at is not None and latest > schedule.ends_at:
            passed = (schedule.ends_at - first) // step
            latest = first + passed * step
        return latest, passed
    parsed = _parsed(schedule)
    latest, passed = _walk(schedule, parsed, start=first, now=now)
    if passed >= MISSED_COUNT_CAP:
        # a long outage of a frequent cron: find the latest time from a recent start instead
        for window in (timedelta(days=1), timedelta(days=31), timedelta(days=366)):
            recent = _next_unbounded(schedule, max(first, now - window), parsed)
            if recent is not None and recent <= now:
                latest = _walk(schedule, parsed, start=recent, now=now)[0]
                break
    return latest, passed


def _walk(schedule: Timed, parsed: Cron, *, start: datetime, now: datetime) -> tuple[datetime, int]:
    latest, passed = start, 0
    while passed < MISSED_COUNT_CAP:
        due = _next_unbounded(schedule, latest, parsed)
        if due is None or due > now or (schedule.ends_at is not None and due > schedule.ends_at):
            break
        latest, passed = due, passed + 1
    return latest, passed


def closest_gap(schedule: Timed, *, after: datetime, sample: int = 100) -> timedelta | None:
    """The shortest time between two of the next `sample` due times (None: fewer than two)."""
    if schedule.interval_seconds:
        return timedelta(seconds=schedule.interval_seconds)
    times = upcoming(schedule, after=after, count=sample)
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    return min(gaps) if gaps else None
