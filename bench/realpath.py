"""The product as users run it: the `make run` layout, every job with a webhook.

    .venv/bin/python -m bench.realpath [--quick] [--only throughput,accept,slow]

Starts the Procfile's processes as `make run` does (bench.layout: web, agents
worker, knowledge worker, beat, Flower with the workers' task events), a
webhook receiver in its own process (bench.receiver) and client processes
(bench.followers), on the bench's embedded PostgreSQL and Redis under
var/bench. Three measurements:

- throughput: N echo jobs over 32 connections, each with a callback_url;
  a quarter of the clients take only the webhook, a quarter long-poll
  `wait/?timeout=30`, a quarter follow the SSE stream, a quarter poll once a
  second. End-to-end jobs/s from the first submit to the last webhook, the
  send-message latencies, every webhook received exactly once, and the CPU
  each process spent per job (psutil, children included);
- accept: send-message at 100 req/s open loop (latency from when each request
  was due) while the agents worker drains the same jobs, webhooks on;
- slow: 1,000 × 1 s jobs (`local` model, latency_ms 1000), a webhook each,
  on one agents worker process: the Procfile's worker line with its
  concurrency raised to 1,000 (AGENTS_CONCURRENCY, which the line reads; the
  `--concurrency` value itself if a Procfile no longer reads it), from the
  first submit to the last webhook.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.layout import (
    ONE_USER_FOR_MANY,
    ONE_USER_NOTE,
    PROCFILE,
    PY,
    VAR,
    Child,
    Layout,
    Say,
    ensure_concurrency,
    pct,
    purge_and_settle,
    quiet_httpx,
    say,
    standalone_setup,
    terminate_on_signals,
    total_cpu,
)

LABEL = "7"
MIX = "webhook,longpoll,sse,poll"
SLOW_CONCURRENCY = 1000


def _get_json(url: str) -> Any:
    import httpx

    quiet_httpx()
    return httpx.get(url, timeout=30).json()


def _summary(latencies: list[float]) -> dict[str, Any]:
    return {"p50_ms": pct(latencies, 50), "p95_ms": pct(latencies, 95), "p99_ms": pct(latencies, 99),
            "max_ms": max(latencies) if latencies else None}


def _webhooks(receiver_url: str, tag: str, accepted: list[str], timeout: float, layout: Layout,
              say: Say) -> dict[str, Any]:
    """Wait until every accepted job's webhook arrived (or `timeout`), then check each came exactly once."""
    deadline = time.monotonic() + timeout
    expected = len(accepted)
    while time.monotonic() < deadline:
        stats = _get_json(f"{receiver_url}/_stats?tag={tag}")
        if stats["jobs"] >= expected:
            break
        layout.check_alive()
        time.sleep(0.5)
    else:
        say(f"   webhooks: {stats['jobs']} of {expected} jobs after {timeout:.0f} s; counting what arrived")
    dump = _get_json(f"{receiver_url}/_dump?tag={tag}")
    wanted = set(accepted)
    per_job: dict[str, list[Any]] = defaultdict(list)
    for arrived, webhook_id, job_id, kind in dump["records"]:
        per_job[job_id].append((arrived, webhook_id, kind))
    first_arrival = {job: min(r[0] for r in recs) for job, recs in per_job.items() if job in wanted}
    # Standard Webhooks is at least once: a retry repeats the webhook-id, and receivers dedupe on it.
    # Exactly once is then one distinct webhook-id per job; a second id would be a second event.
    once = sum(1 for job in wanted if len({r[1] for r in per_job.get(job, ())}) == 1)
    repeated_ids = sum(len(recs) - len({r[1] for r in recs}) for job, recs in per_job.items() if job in wanted)
    several_ids = sum(1 for job in wanted if len({r[1] for r in per_job.get(job, ())}) > 1)
    kinds = Counter(r[2] for job in wanted for r in per_job.get(job, ()))
    return {"expected": expected, "received": len(dump["records"]), "jobs_with_webhook": len(first_arrival),
            "exactly_once": once, "missing": expected - len(first_arrival), "duplicate_deliveries": repeated_ids,
            "jobs_with_several_webhook_ids": several_ids,
            "unexpected_jobs": len([job for job in per_job if job not in wanted]),
            "types": dict(kinds), "signatures_verified": dump["verified"], "bad_signatures": dump["bad_signatures"],
            "bad_signature_examples": dump["bad_examples"],
            "last_arrival": max(first_arrival.values()) if first_arrival else None, "first_arrival": first_arrival}


def _jobs_in_db(accepted: list[str], first_arrival: dict[str, float]) -> dict[str, Any]:
    """Statuses and deliveries from PostgreSQL, and where the time went: accepted → finished
    (queue + run), and finished → the webhook's arrival at the receiver (the delivery path)."""
    from django.db.models import Count, Sum

    from apps.jobs.models import Job
    from apps.webhooks.models import WebhookDelivery

    jobs = Job.objects.filter(public_id__in=accepted)
    statuses = dict(jobs.values_list("status").annotate(n=Count("id")))
    run_ms, hook_ms = [], []
    for public_id, created, finished in jobs.values_list("public_id", "created_at", "finished_at"):
        if finished is None:
            continue
        run_ms.append((finished - created).total_seconds() * 1000)
        if public_id in first_arrival:
            hook_ms.append((first_arrival[public_id] - finished.timestamp()) * 1000)
    deliveries = WebhookDelivery.objects.filter(job__public_id__in=accepted)
    return {"statuses": statuses,
            "deliveries": dict(deliveries.values_list("status").annotate(n=Count("id"))),
            "delivery_attempts": deliveries.aggregate(n=Sum("attempt_count"))["n"] or 0,
            "accepted_to_finished": _summary(run_ms), "finished_to_webhook": _summary(hook_ms)}


def drive(layout: Layout, receiver: Child, receiver_url: str, ctx: dict[str, Any], *, name: str, agent: str,
          count: int, connections: int, say: Say, rate: float = 0, mix: str = "webhook",
          deadline: float = 600, webhook_timeout: float | None = None) -> dict[str, Any]:
    """One client run against the layout: send, follow, wait for the webhooks, count CPU."""
    import psutil

    # a client taking only webhooks leaves as soon as it is answered: the backlog drains after it
    webhook_timeout = webhook_timeout or max(180.0, count / 2)

    tag = f"{name}-{int(time.time() * 1000)}"
    receiver_proc = psutil.Process(receiver.proc.pid)
    cpu_before, receiver_before = layout.cpu_seconds(), total_cpu(receiver_proc)
    flower_before = layout.flower_events()
    args = [PY, "-m", "bench.followers", "--url", f"127.0.0.1:{layout.web_port}", "--token", ctx["token"],
            "--agent", agent, "--count", str(count), "--connections", str(connections),
            "--callback", f"{receiver_url}/hook/{tag}", "--mix", mix, "--deadline", str(deadline)]
    if rate:
        args += ["--rate", str(rate)]
    client = Child(f"realpath-{name}-client", args)
    try:
        out = json.loads(client.wait(deadline + 120))
    finally:
        client.stop()
    accepted = out["job_ids"]
    say(f"   {len(accepted)} of {count} accepted in {out['submit_wall_s']:.1f} s; waiting for their webhooks")
    hooks = _webhooks(receiver_url, tag, accepted, webhook_timeout, layout, say)
    first_arrival = hooks.pop("first_arrival")
    cpu_after, receiver_after = layout.cpu_seconds(), total_cpu(receiver_proc)
    flower_after = layout.flower_events()
    flower = {kind: n - flower_before.get(kind, 0.0) for kind, n in flower_after.items()
              if n - flower_before.get(kind, 0.0)}
    per_job = max(1, len(accepted))
    cpu_ms = {part: (cpu_after[part] - cpu_before.get(part, 0.0)) * 1000 / per_job for part in cpu_after}
    first, last = out["first_submit"], hooks["last_arrival"]
    seconds = (last - first) if first and last else None
    errors = sum(n for status, n in out["statuses"].items() if status != "202")
    follow_errors = sum(f["errors"] for f in out["follow"].values())
    return {"jobs": count, "accepted": len(accepted), "connections": connections, "rate": rate, "mix": mix,
            "submit": {**_summary(out["latencies_ms"]), "statuses": out["statuses"], "errors": errors,
                       "wall_s": out["submit_wall_s"], "accepted_per_s": len(accepted) / out["submit_wall_s"]},
            "first_submit_to_last_webhook_s": seconds,
            "jobs_per_s": (hooks["jobs_with_webhook"] / seconds) if seconds else None,
            "webhooks": hooks, "follow": out["follow"], "follow_errors": follow_errors,
            "client_timed_out": out["timed_out"], "error_examples": out["error_examples"][:10],
            "db": _jobs_in_db(accepted, first_arrival), "flower_events": flower, "cpu_ms_per_job": cpu_ms,
            "cpu_ms_per_job_receiver": (receiver_after - receiver_before) * 1000 / per_job,
            "cpu_ms_per_job_clients": out["cpu_s"] * 1000 / per_job}


def scenario_realpath(ctx: dict[str, Any], quick: bool, say: Say = say, only: set[str] | None = None,
                      count: int | None = None, procfile: Path = PROCFILE) -> dict[str, Any]:
    from apps.agents.models import Agent
    from apps.webhooks.services import webhook_secret_get_or_create

    wanted = only or {"throughput", "accept", "slow", "compare"}
    sizes = {"throughput": 500 if quick else 3000, "accept_s": 3 if quick else 10,
             "slow": 200 if quick else 1000, "compare": 100 if quick else 500}
    if count:  # debugging the harness: every scenario at this size
        sizes = {"throughput": count, "accept_s": max(1, count // 100), "slow": count, "compare": count}
    quiet_httpx()
    settled = purge_and_settle(ctx["user"])
    slow_agent = Agent.objects.get(public_id=ctx["slow"])
    if (slow_agent.model_provider, slow_agent.model_options.get("latency_ms")) != ("local", 1000):
        raise RuntimeError(f"ctx['slow'] ({ctx['slow']}) is not a local agent with latency_ms 1000")
    secret = webhook_secret_get_or_create(user=ctx["user"])
    # the bench user stands for many users: fair sharing's per-user cap lifted (scenario 11 measures it)
    layout = Layout("realpath", say, overrides=dict(ONE_USER_FOR_MANY), procfile=procfile)
    receiver = Child("realpath-receiver", [PY, "-m", "bench.receiver", "--secret", secret, "--verify-every", "20"])
    result: dict[str, Any] = {"quick": quick, "settled_before": settled, "procfile": str(procfile)}
    try:
        receiver_url = f"http://127.0.0.1:{int(receiver.first_line(30).split()[1])}"
        say(f"{LABEL}. real path: starting the Procfile's processes as make run does (logs in var/bench/logs)")
        layout.start()
        result["layout"] = layout.describe()
        result["environment"] = {
            "make run": "AGENTOS_WEBHOOK_ALLOW_PRIVATE=1, FLOWER_BASIC_AUTH, OPIE_WEB_PORT, OPIE_FLOWER_PORT",
            "bench": "OPIE_VAR_DIR=var/bench (embedded PostgreSQL and Redis), AGENTOS_RATE_LIMIT_PER_MINUTE=0 "
                     "(a per-token limit; the bench is one token), PYTHONUNBUFFERED=1; logs to files, not honcho",
            "fair sharing": ONE_USER_NOTE}
        if "throughput" in wanted:
            n = sizes["throughput"]
            say(f"{LABEL}a. {n} echo jobs over 32 connections, a webhook each; clients follow by {MIX}")
            result["throughput"] = drive(layout, receiver, receiver_url, ctx, name="throughput", agent=ctx["echo"],
                                         count=n, connections=32, mix=MIX, say=say)
        if "accept" in wanted:
            seconds = sizes["accept_s"]
            say(f"{LABEL}b. send-message at 100 req/s for {seconds} s (open loop) while the worker drains them")
            result["accept"] = drive(layout, receiver, receiver_url, ctx, name="accept", agent=ctx["echo"],
                                     count=100 * seconds, connections=256, rate=100, say=say)
        if wanted & {"slow", "compare"}:
            notes: list[str] = []
            layout.restart("worker", extra={"AGENTS_CONCURRENCY": str(SLOW_CONCURRENCY)},
                           adjust=lambda spec: ensure_concurrency(spec, SLOW_CONCURRENCY, notes))
        for key, letter in (("slow", "c"), ("compare", "d")):
            if key not in wanted:
                continue
            n = sizes[key]
            say(f"{LABEL}{letter}. {n} × 1 s jobs on one agents worker process, concurrency {SLOW_CONCURRENCY}")
            result[key] = {**drive(layout, receiver, receiver_url, ctx, name=key, agent=ctx["slow"], count=n,
                                   connections=64, say=say),
                           "worker_command": layout.describe()["worker"]["command"], "how": notes}
    finally:
        layout.stop()
        receiver.stop()
    return result


def _cpu_row(r: dict[str, Any]) -> str:
    cpu = r["cpu_ms_per_job"]
    system = sum(cpu.values())
    names = " · ".join(cpu) + " (system total) · receiver · clients"
    values = " · ".join(f"{v:.1f}" for v in cpu.values())
    return (f"| | CPU per job: {names} | {values} ({system:.1f}) · {r['cpu_ms_per_job_receiver']:.1f} · "
            f"{r['cpu_ms_per_job_clients']:.1f} ms |")


def _hooks_cell(r: dict[str, Any]) -> str:
    h = r["webhooks"]
    return (f"{h['exactly_once']} of {h['expected']} exactly once · {h['missing']} missing · "
            f"{h['duplicate_deliveries']} duplicates · signatures {h['signatures_verified']} verified, "
            f"{h['bad_signatures']} bad")


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def report_rows(result: dict[str, Any]) -> list[str]:
    rows = [f"| {LABEL}. real path: layout | processes · environment | the Procfile's "
            f"{' · '.join(result.get('layout', {}))}, started as make run starts them, with make run's environment "
            "and the bench's: embedded PostgreSQL and Redis under var/bench, AGENTOS_RATE_LIMIT_PER_MINUTE=0 "
            "(a per-token limit; the bench is one token); " + ONE_USER_NOTE + " |"]
    if "throughput" in result:
        t = result["throughput"]
        s = t["submit"]
        rate = "n/a" if t["jobs_per_s"] is None else f"{t['jobs_per_s']:.0f}"
        span = "n/a" if t["first_submit_to_last_webhook_s"] is None else f"{t['first_submit_to_last_webhook_s']:.1f}"
        rows += [f"| {LABEL}a. real path (make run layout): {t['jobs']} echo jobs, a webhook each, 32 connections | "
                 f"end-to-end jobs/s, first submit → last webhook | {rate} ({t['accepted']} jobs in {span} s; "
                 f"accepted {s['accepted_per_s']:.0f}/s) |",
                 f"| | send-message p50 / p95 / p99, errors | {_ms(s['p50_ms'])} / {_ms(s['p95_ms'])} / "
                 f"{_ms(s['p99_ms'])} ms, {s['errors']} of {t['jobs']} |",
                 f"| | webhooks | {_hooks_cell(t)} |"]
        follow = " · ".join(f"{mode} {f['terminal']}/{f['jobs']}" if mode != "webhook" else f"webhook only {f['jobs']}"
                            for mode, f in t["follow"].items())
        seen = " · ".join(f"{mode} {_ms(f['seen_p50_ms'])}" for mode, f in t["follow"].items() if mode != "webhook")
        db = t["db"]
        rows += [f"| | clients that saw the end (of their jobs), errors | {follow}; {t['follow_errors']} errors |",
                 f"| | accepted → client saw the end, p50 | {seen} ms |",
                 f"| | accepted → finished p50 / p99 · finished → webhook arrived p50 / p99 | "
                 f"{_ms(db['accepted_to_finished']['p50_ms'])} / {_ms(db['accepted_to_finished']['p99_ms'])} · "
                 f"{_ms(db['finished_to_webhook']['p50_ms'])} / {_ms(db['finished_to_webhook']['p99_ms'])} ms |",
                 "| | task events Flower received meanwhile | "
                 + (" · ".join(f"{kind} {n:.0f}" for kind, n in t["flower_events"].items()) or "none") + " |",
                 _cpu_row(t)]
    if "accept" in result:
        a = result["accept"]
        s = a["submit"]
        rows += [f"| {LABEL}b. send-message, 100 req/s open loop, make run layout, worker draining, webhooks | "
                 f"p50 / p95 / p99, errors | {_ms(s['p50_ms'])} / {_ms(s['p95_ms'])} / {_ms(s['p99_ms'])} ms, "
                 f"{s['errors']} of {a['jobs']} |",
                 f"| | webhooks | {_hooks_cell(a)} |"]
    if "slow" in result:
        c = result["slow"]
        span = "n/a" if c["first_submit_to_last_webhook_s"] is None else f"{c['first_submit_to_last_webhook_s']:.2f}"
        rows += [f"| {LABEL}c. {c['jobs']} × 1 s jobs, a webhook each, one agents worker (concurrency "
                 f"{SLOW_CONCURRENCY}) | first submit → last webhook | {span} s (accepted "
                 f"{c['submit']['accepted_per_s']:.0f}/s, send-message p99 {_ms(c['submit']['p99_ms'])} ms) |",
                 f"| | accepted → finished p99 · finished → webhook arrived p50 / p99 | "
                 f"{_ms(c['db']['accepted_to_finished']['p99_ms'])} · {_ms(c['db']['finished_to_webhook']['p50_ms'])}"
                 f" / {_ms(c['db']['finished_to_webhook']['p99_ms'])} ms |",
                 f"| | webhooks | {_hooks_cell(c)} |"]
    if "compare" in result:
        c = result["compare"]
        span = "n/a" if c["first_submit_to_last_webhook_s"] is None else f"{c['first_submit_to_last_webhook_s']:.2f}"
        rows += [f"| {LABEL}d. {c['jobs']} × 1 s jobs as 7c (for the AgentOS comparison, scenario 9) | "
                 f"first submit → last webhook, client clock | {span} s ({_hooks_cell(c)}) |"]
    return rows


def _all_hooks(r: dict[str, Any]) -> bool:
    h = r["webhooks"]
    return h["exactly_once"] == h["expected"] == r["jobs"]


def targets_rows(result: dict[str, Any]) -> list[tuple[str, str, bool]]:
    rows = []
    if "throughput" in result:
        t = result["throughput"]
        rate = t["jobs_per_s"] or 0.0
        rows.append(("end-to-end echo jobs/s, a webhook each, make run layout ≥ 150",
                     f"{rate:.0f} jobs/s ({t['webhooks']['exactly_once']} of {t['jobs']} webhooks exactly once)",
                     rate >= 150 and _all_hooks(t)))
    if "accept" in result:
        s = result["accept"]["submit"]
        p99 = s["p99_ms"] if s["p99_ms"] is not None else float("inf")
        rows.append(("send-message p99 ≤ 50 ms at 100 req/s while the worker drains the same jobs",
                     f"{p99:.1f} ms, {s['errors']} errors", p99 <= 50 and s["errors"] == 0))
    if "slow" in result:
        c = result["slow"]
        span = c["first_submit_to_last_webhook_s"] or float("inf")
        rows.append(("1,000 × 1 s jobs, a webhook each, one agents worker process ≤ 4 s"
                     + ("" if c["jobs"] == 1000 else f" (quick run: {c['jobs']} jobs)"),
                     f"{span:.2f} s", span <= 4 and _all_hooks(c) and c["jobs"] == 1000))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts")
    parser.add_argument("--only", default="", help="comma-separated: throughput, accept, slow")
    parser.add_argument("--procfile", type=Path, default=PROCFILE, help="another Procfile (to try a candidate layout)")
    parser.add_argument("--count", type=int, default=0, help="override every scenario's size (debugging)")
    parser.add_argument("--json", default=str(VAR / "realpath-latest.json"), help="write the result here")
    args = parser.parse_args()
    terminate_on_signals()
    started = time.monotonic()
    ctx = standalone_setup("realpath")
    only = {part.strip() for part in args.only.split(",") if part.strip()} or None
    result = scenario_realpath(ctx, args.quick, say, only, args.count or None, args.procfile)
    text = json.dumps(result, indent=2)
    with open(args.json, "w") as out:
        out.write(text)
    print("\n".join(["| scenario | measure | value |", "|---|---|---|", *report_rows(result), "",
                     "| target | measured | met |", "|---|---|---|",
                     *(f"| {n} | {v} | {'yes' if m else 'no'} |" for n, v, m in targets_rows(result))]))
    say(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
