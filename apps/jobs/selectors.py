from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import Count, Min, QuerySet
from django.utils import timezone

from apps.agents.models import Agent
from apps.chat.models import ChatSession
from apps.common import DomainError, NotFound, columns, fetch_instances
from apps.jobs.models import Job, JobAction

# the job with its agent's and session's public ids (all the job's JSON needs of them; other
# fields of theirs load on first use): every poll, long-poll and stream starts with this lookup
_OWNED_JOB_SQL = (
    f"SELECT {columns(Job, 'j')}, {columns(Agent, 'a', ['public_id'])}, {columns(ChatSession, 's', ['public_id'])} "
    f"FROM {Job._meta.db_table} j LEFT JOIN {Agent._meta.db_table} a ON a.id = j.agent_id "
    f"LEFT JOIN {ChatSession._meta.db_table} s ON s.id = j.session_id WHERE j.owner_id = %s AND j.public_id = %s")


def job_get_owned(*, user: AbstractBaseUser, job_id: str) -> Job:
    found = fetch_instances(_OWNED_JOB_SQL, [user.pk, job_id], Job, Agent, ChatSession,
                            fields={Agent: ["public_id"], ChatSession: ["public_id"]})
    if found is None:
        raise NotFound("job")
    job, agent, session = found
    job.agent, job.session = agent, session  # type: ignore[assignment]
    return job  # type: ignore[return-value]


def actions_pending(*, user: AbstractBaseUser, jobs: list[Job] | None = None) -> QuerySet[JobAction]:
    """What waits for `user`: the undecided actions of their paused jobs (of `jobs` when given),
    newest first, with what a card shows of them (agent, session, the pause's expiry)."""
    actions = (JobAction.objects.filter(job__owner=user, job__status=Job.Status.REQUIRES_ACTION,
                                        status=JobAction.Status.PENDING)
               .select_related("job__agent", "job__session", "pause").order_by("-created_at", "-id"))
    return actions.filter(job__in=jobs) if jobs is not None else actions


def job_list(*, user: AbstractBaseUser, status: str | None = None, kind: str | None = None,
             agent_id: str | None = None, session_id: str | None = None) -> QuerySet[Job]:
    jobs = Job.objects.select_related("agent", "session").filter(owner=user)
    if status:
        if status not in Job.Status.values:
            raise DomainError("invalid_input", f"status must be one of {', '.join(Job.Status.values)}.")
        jobs = jobs.filter(status=status)
    if kind:
        if kind not in Job.Kind.values:
            raise DomainError("invalid_input", f"kind must be one of {', '.join(Job.Kind.values)}.")
        jobs = jobs.filter(kind=kind)
    if agent_id:
        jobs = jobs.filter(agent__public_id=agent_id)
    if session_id:
        jobs = jobs.filter(session__public_id=session_id)
    return jobs


def agent_metrics(*, agent_pks: list[int], viewer: AbstractBaseUser, days: int = 14) -> dict[int, dict[str, Any]]:
    """Message-job figures per agent from the job table: count, success rate,
    p50/p95 run time, tokens, last use and jobs per day for the last `days`.
    An agent's owner sees every user's jobs on it; anyone else only their own."""
    if not agent_pks:
        return {}
    since = timezone.now() - timedelta(days=days - 1)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT j.agent_id, count(*), count(*) FILTER (WHERE j.status = 'succeeded'),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM j.finished_at - j.started_at))
                       FILTER (WHERE j.status = 'succeeded'),
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM j.finished_at - j.started_at))
                       FILTER (WHERE j.status = 'succeeded'),
                   coalesce(sum((j.result -> 'metrics' ->> 'total_tokens')::bigint)
                       FILTER (WHERE j.status = 'succeeded'), 0),
                   max(j.created_at)
            FROM jobs_job j JOIN agents_agent a ON a.id = j.agent_id
            WHERE j.kind = 'message' AND j.agent_id = ANY(%s) AND (a.owner_id = %s OR j.owner_id = %s)
            GROUP BY j.agent_id
            """, [agent_pks, viewer.pk, viewer.pk])
        rows = cursor.fetchall()
        cursor.execute(
            """
            SELECT j.agent_id, date_trunc('day', j.created_at)::date, count(*)
            FROM jobs_job j JOIN agents_agent a ON a.id = j.agent_id
            WHERE j.kind = 'message' AND j.agent_id = ANY(%s) AND (a.owner_id = %s OR j.owner_id = %s)
              AND j.created_at >= %s
            GROUP BY 1, 2
            """, [agent_pks, viewer.pk, viewer.pk, since.replace(hour=0, minute=0, second=0, microsecond=0)])
        daily = cursor.fetchall()
    today = timezone.now().date()
    axis = [today - timedelta(days=offset) for offset in range(days - 1, -1, -1)]
    per_day: dict[int, dict[Any, int]] = {}
    for agent_pk, day, count in daily:
        per_day.setdefault(agent_pk, {})[day] = count
    metrics = {pk: {"jobs": 0, "success_rate": None, "p50_s": None, "p95_s": None, "tokens": 0, "last_used": None,
                    "per_day": [0] * days} for pk in agent_pks}
    for agent_pk, total, ok, p50, p95, tokens, last in rows:
        metrics[agent_pk].update({"jobs": total, "success_rate": ok / total if total else None,
                                  "p50_s": p50, "p95_s": p95, "tokens": int(tokens or 0), "last_used": last})
    for agent_pk, counts in per_day.items():
        metrics[agent_pk]["per_day"] = [counts.get(day, 0) for day in axis]
    return metrics


def queue_snapshot() -> dict[str, dict[str, Any]]:
    """For /metrics, per kind: how many jobs are queued and running, and when the oldest
    queued one was accepted (`oldest`). One statement over the status index."""
    rows = (Job.objects.filter(status__in=[Job.Status.QUEUED, Job.Status.RUNNING]).values_list("kind", "status")
            .annotate(count=Count("id"), oldest=Min("created_at")).order_by())
    snapshot: dict[str, dict[str, Any]] = {}
    for kind, status, count, oldest in rows:
        counts = snapshot.setdefault(kind, {})
        counts[status] = count
        if status == Job.Status.QUEUED:
            counts["oldest"] = oldest
    return snapshot
