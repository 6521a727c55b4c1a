"""Reading schedules: always the owner's own; anyone else's is a 404."""
from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from apps.common import NotFound
from apps.schedules.models import Schedule, ScheduleRun


def schedule_get_owned(*, user: AbstractBaseUser, schedule_id: str) -> Schedule:
    schedule = Schedule.objects.select_related("owner", "agent", "session").filter(
        owner_id=user.pk, public_id=schedule_id).first()
    if schedule is None:
        raise NotFound("schedule")
    return schedule


def schedule_list(*, user: AbstractBaseUser, agent_id: str | None = None) -> QuerySet[Schedule]:
    schedules = Schedule.objects.filter(owner_id=user.pk)
    if agent_id:
        schedules = schedules.filter(agent_public_id=agent_id)
    return schedules


def schedule_runs(*, schedule: Schedule) -> QuerySet[ScheduleRun]:
    return ScheduleRun.objects.filter(schedule=schedule).select_related("job", "job__session")
