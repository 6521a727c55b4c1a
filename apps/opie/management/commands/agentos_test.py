"""`manage.py agentos_test [--user-id N] [--agent-id ID]`: the operator's end-to-end self-check.

Configuration, database, broker, a worker on `agents`, then each selected agent
built and asked a short question through the same queue path as the API, then
the knowledge side: the embedding model, a vector search over the agents'
knowledge bases, a worker on `knowledge`. Prints a pass/fail report with
timings; exits non-zero when anything fails. It leaves no chat session behind
(apps.opie.selfcheck).
"""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.table import Table

from apps.opie import selfcheck
from apps.opie.checks import Check, broker, database, queues_served, timed


class Command(BaseCommand):
    help = "Check a deployment end to end: configuration, database, broker, workers, every agent, knowledge."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user-id", type=int, help="check the agents this user may use, as this user")
        parser.add_argument("--agent-id", help="check only this agent")
        parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for each agent's reply")

    def handle(self, *args: Any, user_id: int | None, agent_id: str | None, timeout: float, **_: Any) -> None:
        try:
            targets = selfcheck.selfcheck_targets(user_id=user_id, agent_id=agent_id)
        except selfcheck.SelfCheckRefused as exc:
            raise CommandError(exc.message) from exc
        checks = [timed("configuration", selfcheck.configuration), timed("database", database),
                  timed("broker", broker), timed("worker on 'agents'", lambda: queues_served(("agents",)))]
        worker_ready = checks[-1].ok
        for agent, user in targets:
            checks.append(timed(f"agent {agent.public_id} ({agent.name})", lambda agent=agent, user=user:
                                selfcheck.agent_ask(agent=agent, user=user, timeout=timeout,
                                                    worker_ready=worker_ready)))
        checks += [timed("embedding model", selfcheck.embedding_model),
                   timed("knowledge search", lambda: selfcheck.knowledge_search(agents=[a for a, _ in targets])),
                   timed("worker on 'knowledge'", lambda: queues_served(("knowledge",)))]
        self._report(checks)
        failed = [c for c in checks if not c.ok]
        if failed:
            raise CommandError(f"{len(failed)} of {len(checks)} checks failed: "
                               + "; ".join(f"{c.name}: {c.detail}" for c in failed))
        self.stdout.write(f"all {len(checks)} checks passed")

    def _report(self, checks: list[Check]) -> None:
        table = Table(title="agentos_test")
        for column in ("check", "result", "ms"):
            table.add_column(column, no_wrap=True)
        table.add_column("detail", overflow="fold")
        for check in checks:
            table.add_row(check.name, "PASS" if check.ok else "FAIL", f"{check.ms:.1f}", check.detail)
        Console(file=self.stdout, force_terminal=False, width=160).print(table)
