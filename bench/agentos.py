"""Scenario 9 of the benchmarks: agno's AgentOS, measured fairly, N × 1 s runs.

    python -m bench.agentos [--quick] [--count N] [--only durable|agentos_start]

Both servers are one uvicorn process on this machine with telemetry off, both
run the same `local` model whose async path awaits `asyncio.sleep(1)`, every
run is its own session, and every figure is the client process's wall clock
from its first submission to its last observed completion (bench.agentos_client,
a process of its own, with one connection per run so the client is never the
limit). The server's CPU seconds and PostgreSQL's are counted over the
measured runs; a few warm-up runs go first, so imports and lazily created
tables are not measured.

* agno in its own durable mode: a plain `AgentOS` (bench.agno_app) over
  agno's `PostgresDb` on the bench's embedded PostgreSQL (schema
  `bench_agno`, dropped before each measurement), `QueueConfig(durable=True)`:
  each run is posted with `background=true`, accepted as a committed row of
  agno's job queue and executed by the process's queue worker. Followed the
  two ways agno offers: with `stream=false` (a 202) by polling
  `GET /agents/slow/runs/<run_id>?session_id=...` every second, as agno
  documents, and with `stream=true` by reading the run's event stream (SSE)
  from the same POST, which costs the server no polls. With the queue's
  concurrency cap at N (the in-flight budget Opie's worker gets in scenario
  4), and streamed also at agno's default cap, 32.
* `manage.py agentos_start`: agno's AgentOS over the Django chat tables
  (DjangoSessionDb), runs posted with `stream=false`, its synchronous mode.
  Twice, one server each: with its storage calls on one thread
  (AGENTOS_SERVER_DB_THREADS=1, how sync_to_async's default
  `thread_sensitive=True` ran every one of them before), then on its default
  16 threads; scenario 9's comparison takes the second.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bench.layout import ONE_USER_FOR_MANY, answers_ok, free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
POLL_S = 1.0
WARMUP = 8
LATENCY_MS = 1000  # the model's wait per run: the bench's `slow` agent has model_options latency_ms 1000
AGNO_DEFAULT_CAP = 32  # agno's AGNO_BACKGROUND_MAX_CONCURRENCY default


def _var() -> Path:
    from config.embedded import locate

    return locate().var_dir


def _start(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    logs = _var() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "wb") as log:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_health(url: str, proc: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited; see {_var() / 'logs' / (name + '.log')}")
        if answers_ok(f"{url}/health", 2):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{name} never answered /health")


def _cpu(pid: int) -> float:
    """User + system seconds of a process and its children, exited ones included."""
    import psutil

    try:
        proc = psutil.Process(pid)
        own = proc.cpu_times()
        live = sum(t.user + t.system for t in (c.cpu_times() for c in proc.children(recursive=True)))
        return own.user + own.system + own.children_user + own.children_system + live
    except psutil.NoSuchProcess:
        return 0.0


def _postgres_cpu() -> float:
    """The embedded PostgreSQL's postmaster with all its backends, live and closed."""
    import psutil

    var = str(_var())
    return sum(_cpu(p.pid) for p in psutil.process_iter(["cmdline"])
               if "bin/postgres" in " ".join(p.info["cmdline"] or []) and var in " ".join(p.info["cmdline"] or []))


def _client(mode: str, url: str, agent: str, count: int, connections: int, token: str = "") -> dict[str, Any]:
    """bench.agentos_client in its own process: `sync`, `poll` or `stream` (see there)."""
    out = subprocess.run([PY, "-m", "bench.agentos_client", mode, "--url", url, "--agent", agent, "--token", token,
                          "--count", str(count), "--connections", str(connections), "--poll", str(POLL_S)],
                         cwd=ROOT, env=dict(os.environ), capture_output=True)
    if out.returncode != 0:
        raise RuntimeError(f"bench.agentos_client {mode} failed:\n{out.stderr.decode()[-3000:]}")
    return json.loads(out.stdout)


def _measure(proc: subprocess.Popen[bytes], run: Callable[[int, int], dict[str, Any]],
             count: int, connections: int) -> dict[str, Any]:
    run(WARMUP, WARMUP)
    server, postgres, load = _cpu(proc.pid), _postgres_cpu(), os.getloadavg()[0]
    result = run(count, connections)
    result["server_cpu_s"] = _cpu(proc.pid) - server
    result["postgres_cpu_s"] = _postgres_cpu() - postgres
    result["load_avg"] = [load, os.getloadavg()[0]]  # the machine's 1-minute load, before and after
    return result


def _agno_db_url() -> str:
    from django.db import connection

    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    if s["HOST"].startswith("/"):  # the embedded server listens on a unix socket
        return f"postgresql+psycopg://{auth}@/{s['NAME']}?host={s['HOST']}"
    return f"postgresql+psycopg://{auth}@{s['HOST']}:{s['PORT'] or 5432}/{s['NAME']}"


def _queue_jobs() -> dict[str, int]:
    """The durable queue's job rows by status: proof the runs went through it."""
    from django.db import connection

    from bench.agno_app import SCHEMA

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT status, count(*) FROM {SCHEMA}.agno_jobs GROUP BY status")
        return {status: n for status, n in cursor.fetchall()}


def agno_durable(mode: str, count: int, connections: int, cap: int | None,
                 say: Callable[[str], None]) -> dict[str, Any]:
    from django.db import connection

    from bench.agno_app import SCHEMA

    seen = f"polled every {POLL_S:g} s" if mode == "poll" else "its event stream tailed"
    say(f"9. agno AgentOS, durable queue (PostgresDb), background=true, {seen}: {count} runs, "
        f"max_concurrency {cap or f'default ({AGNO_DEFAULT_CAP})'}, {connections} connections")
    with connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    port = free_port()
    env = {**os.environ, "BENCH_AGNO_DB_URL": _agno_db_url(), "BENCH_AGNO_MAX_CONCURRENCY": str(cap or ""),
           "BENCH_LATENCY_MS": str(LATENCY_MS)}
    name = "agno-durable"
    proc = _start(name, [PY, "-m", "uvicorn", "bench.agno_app:create_app", "--factory", "--host", "127.0.0.1",
                         "--port", str(port), "--log-level", "warning", "--no-access-log"], env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_health(url, proc, name)
        result = _measure(proc, lambda n, c: _client(mode, url, "slow", n, c), count, connections)
        result["queue_jobs"] = _queue_jobs()
    finally:
        stop_process(proc)
    result["max_concurrency"], result["cap_default"] = cap or AGNO_DEFAULT_CAP, cap is None
    return result


def agentos_start(ctx: dict[str, Any], count: int, connections: int, say: Callable[[str], None],
                  db_threads: int | None = None) -> dict[str, Any]:
    """`db_threads`: AGENTOS_SERVER_DB_THREADS for the server (its default when None); 1 is how
    its storage ran before, every call on sync_to_async's one default thread."""
    threads = f", {db_threads} storage thread{'s' if db_threads != 1 else ''}" if db_threads else ""
    say(f"9. manage.py agentos_start (DjangoSessionDb), stream=false{threads}: {count} runs, "
        f"{connections} connections")
    port = free_port()
    name = "agentos-start"
    # Opie's AgentOS as the bench user, who stands for many users: the per-user cap lifted (scenario 11 measures it)
    env = {**os.environ, **ONE_USER_FOR_MANY, **({"AGENTOS_SERVER_DB_THREADS": str(db_threads)} if db_threads else {})}
    proc = _start(name, [PY, "manage.py", "agentos_start", "--port", str(port), "--user-id", str(ctx["user"].pk)],
                  env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_health(url, proc, name)
        result = _measure(proc, lambda n, c: _client("sync", url, ctx["slow"], n, c, ctx["token"]),
                          count, connections)
    finally:
        stop_process(proc)
    from django.conf import settings

    result["db_threads"] = db_threads or settings.AGENTOS_SERVER_DB_THREADS
    return result


def scenario_agentos(ctx: dict[str, Any], quick: bool, say: Callable[[str], None], count: int | None = None,
                     only: str | None = None) -> dict[str, Any]:
    count = count or (100 if quick else 500)
    result: dict[str, Any] = {"runs": count, "model_s": LATENCY_MS / 1000, "durable": []}
    if only in (None, "durable"):
        result["durable"] = [agno_durable(mode, count, count, cap, say)
                             for mode, cap in (("poll", count), ("stream", count), ("stream", None))]
    if only in (None, "agentos_start"):
        # before and after its storage left sync_to_async's single thread: the same runs, one server each
        result["agentos_start_one_thread"] = agentos_start(ctx, count, count, say, db_threads=1)
        result["agentos_start"] = agentos_start(ctx, count, count, say)
    return result


def _cells(r: dict[str, Any]) -> str:
    failed = f"{r['failed']} failed ({', '.join(f'{k} {v}' for k, v in r['outcomes'].items() if k != 'COMPLETED')})" \
        if r["failed"] else "0 failed"
    return (f"{r['wall_s']:.2f} s · {r['ok']} ok, {failed} · {r['connections']} connections · CPU: server "
            f"{r['server_cpu_s']:.1f} s, PostgreSQL {r['postgres_cpu_s']:.1f} s, client {r['client_cpu_s']:.1f} s "
            f"(load average {max(r['load_avg']):.1f})")


def report_rows(result: dict[str, Any]) -> list[str]:
    n = result["runs"]
    rows = []
    for r in result["durable"]:
        cap = f"agno's default max_concurrency {AGNO_DEFAULT_CAP}" if r["cap_default"] \
            else f"max_concurrency {r['max_concurrency']}"
        seen = f"polled every {r['poll_s']:g} s ({r['polls']} polls)" if r["mode"] == "poll" \
            else "stream=true (its events tailed)"
        rows.append(f"| agno durable queue (PostgresDb), background=true, {seen}, {cap} | {_cells(r)} |")
    for key, when in (("agentos_start_one_thread", "before: every storage call on one thread, as "
                                                   "sync_to_async's default ran them"), ("agentos_start", "")):
        if key in result:
            r = result[key]
            threads = f"{r['db_threads']} storage thread{'s' if r['db_threads'] != 1 else ''}" if "db_threads" in r \
                else "its storage threads"
            rows.append(f"| manage.py agentos_start (Django storage), stream=false, {threads}"
                        f"{f' ({when})' if when else ''} | {_cells(r)} |")
    title = f"9. AgentOS, {n} × 1 s runs, each its own session; client clock, first submit → last completion"
    return [f"| {title if i == 0 else ''} {row}" for i, row in enumerate(rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 runs instead of 500")
    parser.add_argument("--count", type=int, help="this many runs (overrides --quick)")
    parser.add_argument("--only", choices=["durable", "agentos_start"], help="one of the two servers")
    args = parser.parse_args()
    from bench import __main__ as bench  # the bench environment: its own PostgreSQL and Redis under var/bench

    ctx = bench.setup()
    result = scenario_agentos(ctx, args.quick, bench.say, args.count, args.only)
    (_var() / "agentos.json").write_text(json.dumps(result, indent=2))
    print("\n".join(report_rows(result)))
    bench.say(f"wrote {_var() / 'agentos.json'}")


if __name__ == "__main__":
    main()
