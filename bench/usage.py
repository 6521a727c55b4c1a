"""Usage reports at 1,000,000 messages: `python -m bench.usage [--quick]`.

Standalone (not yet a scenario of `python -m bench`; `scenario_usage` has its
shape, for wiring in later). It fills the usage rollup with the rows of
1,000,000 messages in the worst case for a rollup, every message its own row:
100 users x 1,000 days x 10 (agent, model) pairs, one run each (COPY-speed
INSERT ... SELECT from generate_series). Then it times GET /api/v1/agentos/usage/
for the bench user, through the API in process (auth, the query, JSON), over the
default 30 days and over all 1,000 days, for each group_by, p50/p99 of N
requests, and prints the query's plan. The rows are deleted at the end.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import date, timedelta
from typing import Any, Callable

USERS, DAYS, PAIRS = 100, 1000, 10


def _fill(owner: Any, users: int, say: Callable[[str], None]) -> tuple[list[int], float]:
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from apps.usage.models import UsageDaily

    User = get_user_model()
    others = [User.objects.get_or_create(username=f"bench-usage-{i}")[0] for i in range(users - 1)]
    ids = [owner.pk, *(u.pk for u in others)]
    UsageDaily.objects.filter(user_id__in=ids).delete()
    first = date.today() - timedelta(days=DAYS - 1)
    say(f"usage: filling {len(ids) * DAYS * PAIRS:,} rollup rows ({len(ids)} users x {DAYS} days x {PAIRS} pairs)")
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("""
            INSERT INTO usage_usagedaily (user_id, day, agent_public_id, provider, model, runs, model_calls,
                                          tool_calls, input_tokens, output_tokens, duration_ms)
            SELECT u, %s::date + d, 'agent-bench-' || (p %% 5), 'local', 'model-' || (p %% 2), 1, 1 + p %% 3,
                   p %% 3, 100 + p, 50 + d %% 7, 400 + p * 10
              FROM unnest(%s::bigint[]) AS u, generate_series(0, %s) AS d, generate_series(0, %s) AS p""",
                       [first, ids, DAYS - 1, PAIRS - 1])
        cursor.execute("ANALYZE usage_usagedaily")
    return ids, time.perf_counter() - started


def _time(client: Any, params: dict[str, str], requests: int) -> dict[str, float]:
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get("/api/v1/agentos/usage/", params)
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.content
    latencies.sort()
    return {"p50_ms": statistics.median(latencies),
            "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "rows": len(response.json()["rows"])}


def _plan(user_id: int, group_by: str, start: date, end: date) -> str:
    from django.db import connection

    from apps.usage.selectors import report_sql

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + report_sql(group_by),
                       {"user_id": user_id, "from": start, "to": end})
        return "\n".join(row[0] for row in cursor.fetchall())


def scenario_usage(ctx: dict[str, Any], quick: bool, say: Callable[[str], None]) -> dict[str, Any]:
    from django.test import Client

    from apps.usage.models import UsageDaily

    ids, fill_s = _fill(ctx["user"], 10 if quick else USERS, say)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {ctx['token']}")
    requests = 50 if quick else 200
    today = date.today()
    result: dict[str, Any] = {"messages": UsageDaily.objects.count(), "fill_s": fill_s, "requests": requests,
                              "queries": []}
    try:
        for label, params in (("30 days", {}), (f"{DAYS} days", {"from": (today - timedelta(days=DAYS - 1))
                                                                  .isoformat()})):
            for group_by in ("day", "agent", "model"):
                say(f"usage: GET /usage/?group_by={group_by} over {label}, {requests} requests")
                result["queries"].append({"range": label, "group_by": group_by,
                                          **_time(client, {**params, "group_by": group_by}, requests)})
        result["plan"] = _plan(ctx["user"].pk, "agent", today - timedelta(days=29), today)
    finally:
        UsageDaily.objects.filter(user_id__in=ids).delete()
    return result


def report_rows(u: dict[str, Any]) -> list[str]:
    rows = [f"| usage report ({u['messages']:,} messages' rollup rows, filled in {u['fill_s']:.0f} s) | "
            f"GET /usage/ p50 · p99 | |"]
    for q in u["queries"]:
        rows.append(f"| | group_by={q['group_by']}, {q['range']} ({q['rows']} rows) | "
                    f"p50 {q['p50_ms']:.1f} ms · p99 {q['p99_ms']:.1f} ms |")
    return rows


def main() -> None:
    from bench.layout import say, standalone_setup

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 users (100,000 rows), 50 requests each")
    args = parser.parse_args()
    ctx = standalone_setup("usage")
    result = scenario_usage(ctx, args.quick, say)
    print("\n".join(report_rows(result)))
    print(result.pop("plan"))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
