"""`manage.py agentos_test [--user-id N] [--agent-id ID]`: the operator's end-to-end self-check.

Configuration, database, broker, a worker answering, then each selected agent
built and asked a short question through the same queue path as the API, and
the vector store reachable. Prints a pass/fail report with timings; exits
non-zero when anything fails.
"""
from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.table import Table

from apps.agents.models import Agent
from apps.agents.selectors import agent_list_visible
from apps.events.services import job_wait
from apps.jobs.models import Job
from apps.jobs.services import message_send
from apps.opie.agentos.config import agent_os_config
from apps.opie.checks import Check, broker, database, queues_served, timed

QUESTION = "agentos_test: please reply"


def configuration() -> str:
    problems = []
    if not settings.AGENTOS_ENABLED:
        problems.append("AGENTOS_ENABLED is off")
    if os.environ.get("AGNO_TELEMETRY", "").lower() != "false":
        problems.append("agno telemetry is not off")
    if problems:
        raise RuntimeError("; ".join(problems))
    return f"enabled, telemetry off, DEBUG={settings.DEBUG}, job timeout {settings.AGENTOS_JOB_TIMEOUT}s"


def vector_store() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector")
        distance = cursor.fetchone()[0]
    return f"pgvector answers a distance query ({distance:.1f})"


class Command(BaseCommand):
    help = "Check a deployment end to end: configuration, database, broker, workers, every agent, vectors."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user-id", type=int, help="check the agents this user may use, as this user")
        parser.add_argument("--agent-id", help="check only this agent")
        parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for each agent's reply")

    def handle(self, *args: Any, user_id: int | None, agent_id: str | None, timeout: float, **_: Any) -> None:
        checks = [timed("configuration", configuration), timed("database", database), timed("broker", broker),
                  timed("worker on 'agents'", lambda: queues_served(("agents",)))]
        for agent, user in self._targets(user_id, agent_id):
            checks.append(timed(f"agent {agent.public_id} ({agent.name})",
                                lambda agent=agent, user=user: self._ask(agent, user, timeout)))
        checks.append(timed("vector store", vector_store))
        self._report(checks)
        failed = [c.name for c in checks if not c.ok]
        if failed:
            raise CommandError(f"{len(failed)} of {len(checks)} checks failed: {', '.join(failed)}")
        self.stdout.write(f"all {len(checks)} checks passed")

    def _targets(self, user_id: int | None, agent_id: str | None) -> list[tuple[Agent, Any]]:
        user = None
        if user_id is not None:
            user = get_user_model().objects.filter(pk=user_id).first()
            if user is None:
                raise CommandError(f"no user with id {user_id}")
        agents = agent_list_visible(user=user) if user else Agent.objects.filter(enabled=True)
        agents = agents.select_related("owner").order_by("id")
        if agent_id:
            agents = agents.filter(public_id=agent_id)
            if not agents.exists():
                raise CommandError(f"no agent {agent_id}" + (f" visible to user {user_id}" if user else ""))
        return [(agent, user or agent.owner) for agent in agents]

    def _ask(self, agent: Agent, user: Any, timeout: float) -> str:
        parts = agent_os_config.build_parts(agent)
        job = message_send(user=user, agent=agent, message=QUESTION)
        job_wait(job_id=job.pk, timeout=timeout)
        job.refresh_from_db()
        if job.status != Job.Status.SUCCEEDED:
            raise RuntimeError(f"job {job.public_id} {job.status}"
                               + (f": {job.error_code} {job.error_message}" if job.error_code else ""))
        reply = (job.result or {}).get("content", "")
        if not reply:
            raise RuntimeError(f"job {job.public_id} succeeded with an empty reply")
        return f"built in {parts.build_ms:.1f} ms; replied via job {job.public_id}: {reply[:60]!r}"

    def _report(self, checks: list[Check]) -> None:
        table = Table(title="agentos_test")
        for column in ("check", "result", "ms", "detail"):
            table.add_column(column)
        for check in checks:
            table.add_row(check.name, "PASS" if check.ok else "FAIL", f"{check.ms:.1f}", check.detail)
        Console(file=self.stdout, force_terminal=False, width=140).print(table)
