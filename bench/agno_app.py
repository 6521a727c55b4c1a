"""A plain agno AgentOS in its own durable mode, for `bench.agentos`; no Django.

    uvicorn bench.agno_app:create_app --factory

One agent, `slow`, on the same `local` model Opie's bench agent uses (its
async path awaits `asyncio.sleep(latency_ms)`), storing sessions, runs and the
durable queue's jobs in agno's own `PostgresDb` under a schema of its own on
the bench's embedded PostgreSQL. Background runs (`background=true`) are
accepted as committed rows of that queue and executed by the AgentOS
process's own queue worker, at most `BENCH_AGNO_MAX_CONCURRENCY` at a time
(unset: agno's default, 32).
"""
from __future__ import annotations

import os
from typing import Any

SCHEMA = "bench_agno"


def create_app() -> Any:
    from agno.agent import Agent
    from agno.db.postgres import PostgresDb
    from agno.os import AgentOS, QueueConfig

    from apps.agents.local_model import LocalModel

    db = PostgresDb(db_url=os.environ["BENCH_AGNO_DB_URL"], db_schema=SCHEMA)
    # as agentos_start builds each Django agent: history from the db, no telemetry
    model = LocalModel(latency_ms=int(os.environ.get("BENCH_LATENCY_MS", "1000")))
    agent = Agent(id="slow", name="slow", model=model, db=db, add_history_to_context=True, num_history_runs=50,
                  telemetry=False, markdown=False)
    cap = os.environ.get("BENCH_AGNO_MAX_CONCURRENCY")
    queue = QueueConfig(durable=True, max_concurrency=int(cap) if cap else None)
    return AgentOS(id="bench-agno", name="bench", agents=[agent], db=db, queue=queue, telemetry=False).get_app()
