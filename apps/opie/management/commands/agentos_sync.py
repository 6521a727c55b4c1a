"""`manage.py agentos_sync [--user-id N] [--agent-id ID] [--dry-run] [--inline]`.

By default the sync runs as a job on the `sync` queue (a worker must be
running) and this command follows its progress; `--inline` runs it here.
"""
from __future__ import annotations

import time
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from apps.agents.sync import SyncBusy, SyncResult, agents_for_sync, agents_sync, sync_lock, sync_summary
from apps.common import DomainError
from apps.events.services import job_events_since
from apps.jobs.models import Job
from apps.jobs.services import sync_job_create

SYSTEM_USER = "agentos-system"


class Command(BaseCommand):
    help = "Reconcile agent definitions with what runs: validate, mark ok/invalid/stale, bump changed versions."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user-id", type=int, help="only this user's agents")
        parser.add_argument("--agent-id", help="only this agent (its public id)")
        parser.add_argument("--dry-run", action="store_true", help="report what would change; change nothing")
        parser.add_argument("--inline", action="store_true", help="run here instead of on a worker")
        parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the sync job")

    def handle(self, *args: Any, user_id: int | None, agent_id: str | None, dry_run: bool, inline: bool,
               timeout: float, **_: Any) -> None:
        console = Console(file=self.stdout, force_terminal=False, width=110)
        try:
            results = (self._inline(user_id, agent_id, dry_run) if inline
                       else self._queued(user_id, agent_id, dry_run, timeout))
        except (DomainError, SyncBusy) as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from exc
        self._report(console, results, dry_run)
        if any(r["status"] == "invalid" for r in results):
            raise CommandError("some agents are invalid (see the table)")

    def _progress(self) -> Progress:
        return Progress(TextColumn("syncing agents"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(file=self.stderr, width=100))

    def _inline(self, user_id: int | None, agent_id: str | None, dry_run: bool) -> list[dict[str, Any]]:
        agents = list(agents_for_sync(user_id=user_id, agent_id=agent_id))
        with self._progress() as progress, sync_lock():
            task = progress.add_task("sync", total=len(agents))
            results = agents_sync(agents=agents, dry_run=dry_run,
                                  progress=lambda done, total, _: progress.update(task, completed=done))
        return [r.as_dict() for r in results]

    def _queued(self, user_id: int | None, agent_id: str | None, dry_run: bool,
                timeout: float) -> list[dict[str, Any]]:
        owner, _ = get_user_model().objects.get_or_create(username=SYSTEM_USER, defaults={"is_active": False})
        job = sync_job_create(user=owner, agent_id=agent_id, user_id=user_id, dry_run=dry_run)
        self.stderr.write(f"sync job {job.public_id} queued on 'sync'")
        deadline, seen = time.monotonic() + timeout, 0
        with self._progress() as progress:
            task = progress.add_task("sync", total=None)
            while True:
                # the status first, then the events: every progress event written before the
                # job ended is read before the loop stops, so the bar ends at its true count
                job.refresh_from_db()
                for event in job_events_since(job=job, after_seq=seen):
                    seen = event.seq
                    if event.type == "sync.progress":
                        progress.update(task, completed=event.data["done"], total=event.data["total"])
                if job.is_terminal:
                    break
                if time.monotonic() > deadline:
                    raise CommandError(f"sync job {job.public_id} still {job.status} after {timeout:.0f}s: "
                                       "is a worker consuming the 'sync' queue? (or use --inline)")
                time.sleep(0.2)
        if job.status != Job.Status.SUCCEEDED:
            raise CommandError(f"sync job {job.public_id} {job.status}: {job.error_code} {job.error_message}")
        return list(job.result["agents"])

    def _report(self, console: Console, results: list[dict[str, Any]], dry_run: bool) -> None:
        table = Table(title="agent sync" + (" (dry run: nothing changed)" if dry_run else ""))
        for column in ("agent", "name", "status", "was", "config changed", "version", "error"):
            table.add_column(column)
        for r in results:
            table.add_row(r["agent_id"], r["name"], r["status"], r["previous_status"] or "-",
                          "yes" if r["changed"] else "no", str(r["version"]), r["error"] or "")
        console.print(table)
        summary = sync_summary_from_dicts(results)
        console.print(" · ".join(f"{key} {value}" for key, value in summary.items()))


def sync_summary_from_dicts(results: list[dict[str, Any]]) -> dict[str, int]:
    return sync_summary([SyncResult(**r) for r in results])
