"""Held-open waiters: many SSE streams and long-polls on running jobs, while the API keeps answering.

    .venv/bin/python -m bench.waiters [--quick] [--streams S --longpolls L --jobs J --hold s]

In the `make run` layout (bench.layout), with the agents worker's concurrency
raised above the number of jobs (AGENTS_CONCURRENCY, which the Procfile's line
reads): J jobs on `local` agents whose latency_ms outlasts the measurement,
spread over 10 agents, one new session each, are sent and left running. Then
client processes (bench.waitclient, asyncio, RLIMIT_NOFILE raised to the hard
limit) open S SSE streams (`jobs/<id>/events/`) and L long-polls
(`jobs/<id>/wait/?timeout=60`), waiter w following job w mod J. While they are
held, another client process measures `GET jobs/<id>/` and send-message in an
open loop. Then every stream and long-poll must get its job's terminal event.

Also measured: RSS, threads and open descriptors of all web processes (the
server's master and its workers) before the waiters open, once the streams are
open, and once the long-polls are open too (the streams open first, as a wave
of their own): the memory per open stream is the first difference over the
streams opened, the memory per long-poll the second over the long-polls.

Every waiter on its own job would need S + L jobs running at once; the `local`
model's simulated latency wakes its thread every 50 ms (to notice a cancel).
1,000 bare Python threads doing that cost a third of a core, 3,000 cost two
cores (GIL contention), and the agents worker holding 1,000 such runs used
about one core of the two. So J is 1,000 at full size (each job followed by 5
streams and 2 long-polls) and the CPU of every process during the hold is
reported; `--jobs` changes it.
"""
from __future__ import annotations

import argparse
import json
import re
import time
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
)

LABEL = "8"
AGENTS = 10
KIB = 1024


def _hold_agents(user: Any, latency_ms: int) -> list[str]:
    from apps.agents.models import Agent
    from apps.agents.services import agent_create, agent_update

    ids = []
    for i in range(AGENTS):
        agent = Agent.objects.filter(owner=user, name=f"hold-{i}").first()
        if agent is None:
            agent = agent_create(owner=user, name=f"hold-{i}", model_options={"latency_ms": latency_ms})
        elif agent.model_provider != "local" or agent.model_options.get("latency_ms") != latency_ms:
            agent = agent_update(agent=agent, model_provider="local", model_id="echo",
                                 model_options={"latency_ms": latency_ms})
        ids.append(agent.public_id)
    return ids


def _statuses(job_ids: list[str]) -> dict[str, int]:
    from django.db.models import Count

    from apps.jobs.models import Job

    return dict(Job.objects.filter(public_id__in=job_ids).values_list("status").annotate(n=Count("id")))


def _wait_running(job_ids: list[str], timeout: float, layout: Layout) -> tuple[dict[str, int], float | None]:
    from django.db.models import Min

    from apps.jobs.models import Job

    deadline = time.monotonic() + timeout
    while True:
        statuses = _statuses(job_ids)
        if statuses.get("running", 0) >= len(job_ids) or time.monotonic() > deadline:
            break
        layout.check_alive()
        time.sleep(0.5)
    first = Job.objects.filter(public_id__in=job_ids).aggregate(m=Min("started_at"))["m"]
    return statuses, first.timestamp() if first else None


def _end_delays(parts: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """How long after its job finished (finished_at, PostgreSQL's clock: the same machine) each waiter
    saw the end: the terminal event on a stream, the terminal answer of a long-poll."""
    from apps.jobs.models import Job

    seen = [pair for part in parts for pair in part["seen"][kind]]
    finished = dict(Job.objects.filter(public_id__in={job for job, _ in seen}).values_list("public_id", "finished_at"))
    delays = [(at - finished[job].timestamp()) * 1000 for job, at in seen if finished.get(job)]
    return {"waiters": len(delays), "p50_ms": pct(delays, 50), "p99_ms": pct(delays, 99),
            "max_ms": max(delays) if delays else None}


def _wait_ready(files: list[Path], clients: list[Child], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(f.exists() for f in files):
            return [json.loads(f.read_text()) for f in files]
        for client in clients:
            if client.proc.poll() is not None:
                raise RuntimeError(f"{client.name} exited before its waiters were open; see {client.log}")
        time.sleep(0.2)
    raise RuntimeError(f"the waiter clients did not report within {timeout:.0f} s")


def _open_streams(port: int) -> dict[str, float]:
    """The web's own count of the clients it holds, by kind (opie_open_streams on /metrics, summed
    over its processes); the bench scrapes from loopback, which needs no token."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    found = dict.fromkeys(("sse", "long_poll"), 0.0)
    for line in text.splitlines():
        match = re.match(r'opie_open_streams\{kind="(\w+)"\} (\S+)', line)
        if match:
            found[match[1]] = float(match[2])
    return found


def _wait_held(port: int, streams: int, longpolls: int, timeout: float) -> tuple[dict[str, float], float]:
    """Wait until the web holds every waiter the clients opened (a request sent is not yet a
    request the server has taken in); returns its counts and how long that took."""
    started = time.monotonic()
    while True:
        held = _open_streams(port)
        if (held["sse"] >= streams and held["long_poll"] >= longpolls) or time.monotonic() - started > timeout:
            return held, time.monotonic() - started
        time.sleep(0.25)


def _sum(parts: list[dict[str, Any]], key: str) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for name, value in part[key].items():
            total[name] = total.get(name, 0) + value
    return total


def scenario_waiters(ctx: dict[str, Any], quick: bool, say: Say = say, streams: int | None = None,
                     longpolls: int | None = None, jobs: int | None = None, hold_s: float | None = None,
                     client_procs: int | None = None, procfile: Path = PROCFILE) -> dict[str, Any]:
    quiet_httpx()
    S = streams if streams is not None else (500 if quick else 5000)
    L = longpolls if longpolls is not None else (200 if quick else 2000)
    J = jobs or (500 if quick else 1000)
    hold = hold_s or (90 if quick else 180)
    probe_s = 10 if quick else 20
    procs = client_procs or (1 if quick else 2)
    settled = purge_and_settle(ctx["user"])
    agents = _hold_agents(ctx["user"], int(hold * 1000))
    notes: list[str] = []
    concurrency = J + 100  # the probe's own send-messages and the webhook tasks need threads too
    # the bench user stands for many users: fair sharing's per-user cap lifted (scenario 11 measures it)
    layout = Layout("waiters", say, overrides={"AGENTS_CONCURRENCY": str(concurrency), **ONE_USER_FOR_MANY},
                    procfile=procfile)
    clients: list[Child] = []
    result: dict[str, Any] = {"quick": quick, "streams": S, "longpolls": L, "jobs": J, "hold_s": hold,
                              "probe_s": probe_s, "client_procs": procs, "agents": AGENTS,
                              "settled_before": settled, "procfile": str(procfile)}
    jobs_file = VAR / "waiters-jobs.json"
    try:
        say(f"{LABEL}. waiters: starting the Procfile's processes, agents worker concurrency {concurrency}")
        layout.start(adjust=lambda spec: spec.name == "worker" and ensure_concurrency(spec, concurrency, notes))
        result["layout"] = layout.describe()
        result["how"] = notes
        result["fair_sharing"] = ONE_USER_NOTE
        say(f"   sending {J} jobs that run {hold:.0f} s each ({AGENTS} agents, a session each)")
        sender = Child("waiters-submit", [PY, "-m", "bench.followers", "--url", f"127.0.0.1:{layout.web_port}",
                                          "--token", ctx["token"], "--agent", ",".join(agents), "--count", str(J),
                                          "--connections", "32", "--deadline", "300"])
        try:
            sent = json.loads(sender.wait(420))
        finally:
            sender.stop()
        job_ids = sent["job_ids"]
        if not job_ids:
            raise RuntimeError(f"no job was accepted: {sent['statuses']} {sent['error_examples'][:3]}")
        statuses, first_started = _wait_running(job_ids, 120, layout)
        result["submit"] = {"accepted": len(job_ids), "statuses": sent["statuses"], "wall_s": sent["submit_wall_s"],
                            "running_before_open": statuses.get("running", 0), "statuses_before_open": statuses}
        say(f"   {statuses.get('running', 0)} of {len(job_ids)} running; web before the waiters: "
            f"{layout.web_stats()}")
        jobs_file.write_text(json.dumps(job_ids))
        time.sleep(1.0)
        before = layout.web_stats()
        # the probe must end before the first job does
        ends = (first_started or time.time()) + hold
        open_timeout = ends - probe_s - 15 - time.time()
        if open_timeout < 5:
            raise RuntimeError(f"the jobs end too soon ({ends - time.time():.0f} s left): raise --hold")
        say(f"   opening {S} SSE streams from {procs} client process(es), then {L} long-polls from "
            f"{procs} more (up to {open_timeout:.0f} s)")
        opened_at = time.time()
        waves: dict[str, list[dict[str, Any]]] = {}
        # streams first, then the long-polls: the web's memory is read after each wave, so a
        # stream's cost is not mixed with a long-poll's
        for wave, (n_streams, n_longpolls, share) in {"streams": (S, 0, 0.6), "longpolls": (0, L, 1.0)}.items():
            wave_timeout = max(5.0, (ends - probe_s - 15 - time.time()) * share)
            ready_files = [VAR / f"waiters-ready-{wave}-{k}.json" for k in range(procs)]
            for f in ready_files:
                f.unlink(missing_ok=True)
            group = [Child(f"waiters-hold-{wave}-{k}", [
                PY, "-m", "bench.waitclient", "hold", "--url", f"127.0.0.1:{layout.web_port}", "--token",
                ctx["token"], "--jobs", str(jobs_file), "--streams", str(n_streams), "--longpolls", str(n_longpolls),
                "--slice", f"{k}/{procs}", "--ready-file", str(ready_files[k]),
                "--open-timeout", f"{wave_timeout:.1f}", "--deadline", f"{ends - time.time() + 240:.0f}"])
                for k in range(procs)]
            clients.extend(group)
            waves[wave] = _wait_ready(ready_files, group, wave_timeout + 60)
            if wave == "streams":
                time.sleep(1.0)
                streams_open = layout.web_stats()
        ready = [r for wave in waves.values() for r in wave]
        opened = {"streams": sum(r["streams_opened"] for r in ready),
                  "longpolls": sum(r["longpolls_sent"] for r in ready),
                  "complete": all(r["complete"] for r in ready),
                  "seconds": max(r["at"] for r in ready) - opened_at}
        # held open at once: the server has taken in every waiter before the probe starts
        opened["held"], waited = _wait_held(layout.web_port, opened["streams"], opened["longpolls"], 120)
        opened["held_seconds"] = opened["seconds"] + waited
        say(f"   open: {opened['streams']} of {S} streams, {opened['longpolls']} of {L} long-polls "
            f"sent in {opened['seconds']:.1f} s, held by the web after {opened['held_seconds']:.1f} s "
            f"({opened['held']}); web with the streams alone: {streams_open}")
        time.sleep(1.0)
        during = layout.web_stats()
        cpu_before, clock = layout.cpu_seconds(), time.monotonic()
        say(f"   web with the waiters open: {during}; probing GET jobs/<id>/ and send-message for {probe_s} s")
        prober = Child("waiters-probe", [PY, "-m", "bench.waitclient", "probe", "--url", f"127.0.0.1:{layout.web_port}",
                                         "--token", ctx["token"], "--jobs", str(jobs_file), "--agent", ctx["echo"],
                                         "--duration", str(probe_s), "--get-rate", "20", "--send-rate", "10",
                                         "--timeout", "10"])
        try:
            probe = json.loads(prober.wait(probe_s + 90))
        finally:
            prober.stop()
        cpu_after, elapsed = layout.cpu_seconds(), time.monotonic() - clock
        after_probe = layout.web_stats()
        still = _statuses(job_ids)
        held = sum(n for status, n in still.items() if status in ("queued", "running"))
        say(f"   probe: GET p99 {probe['get']['p99_ms']:.1f} ms, send-message p99 {probe['send']['p99_ms']:.1f} ms; "
            f"{held} jobs still running; waiting for the terminal events")
        parts = []
        for client in clients:
            parts.append(json.loads(client.wait(ends - time.time() + 300)))
        stream_totals, longpoll_totals = _sum(parts, "streams"), _sum(parts, "longpolls")
        delta = during["rss_bytes"] - before["rss_bytes"]
        streams_delta = streams_open["rss_bytes"] - before["rss_bytes"]
        result.update({
            "opened": opened,
            "web_before": before, "web_streams_open": streams_open, "web_open": during, "web_after_probe": after_probe,
            "web_rss_per_stream_kib": streams_delta / opened["streams"] / KIB if opened["streams"] else None,
            "web_rss_per_longpoll_kib": ((during["rss_bytes"] - streams_open["rss_bytes"]) / opened["longpolls"] / KIB
                                         if opened["longpolls"] else None),
            "web_rss_per_waiter_kib": (delta / (opened["streams"] + opened["longpolls"]) / KIB
                                       if opened["streams"] + opened["longpolls"] else None),
            "probe": probe, "jobs_still_running_after_probe": held, "held_through_probe": held == len(job_ids),
            "cores_during_probe": {part: (cpu_after[part] - cpu_before.get(part, 0.0)) / elapsed for part in cpu_after},
            "stream_results": stream_totals, "longpoll_results": longpoll_totals,
            "events": _sum(parts, "events"),
            "client_errors": stream_totals["errors"] + longpoll_totals["errors"],
            "client_timed_out": any(p["timed_out"] for p in parts),
            "client_cpu_s": sum(p["cpu_s"] for p in parts), "client_nofile": parts[0]["nofile"],
            "error_examples": [e for p in parts for e in p["error_examples"]][:10] + probe["error_examples"][:5],
            "open_p50_ms": parts[0]["open_p50_ms"], "open_p99_ms": parts[0]["open_p99_ms"],
            "end_seen_after_finish": {kind: _end_delays(parts, kind) for kind in ("streams", "longpolls")},
            "final_statuses": _statuses(job_ids)})
    finally:
        for client in clients:
            client.stop()
        layout.stop()
    return result


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def report_rows(r: dict[str, Any]) -> list[str]:
    o, p = r["opened"], r["probe"]
    st, lp = r["stream_results"], r["longpoll_results"]
    b, d = r["web_before"], r["web_open"]
    so = r.get("web_streams_open") or d  # runs before the waves were measured apart
    cores = r["cores_during_probe"]
    per_stream = r["web_rss_per_stream_kib"]
    ends = r["end_seen_after_finish"]
    return [
        f"| {LABEL}. held-open waiters on running jobs: {r['streams']} SSE + {r['longpolls']} long-polls "
        f"({r['jobs']} jobs) | open at once: streams (200 and headers) · long-polls (sent) | {o['streams']} of "
        f"{r['streams']} · {o['longpolls']} of {r['longpolls']} in {o['seconds']:.1f} s"
        + (f"; all held by the web (its opie_open_streams) after {o['held_seconds']:.1f} s" if "held" in o else "")
        + " |",
        f"| | while held{'' if r['held_through_probe'] else ' (some jobs ended during the probe)'}: GET jobs/<id>/ "
        f"p50 / p99 · send-message p50 / p99, errors | {_ms(p['get']['p50_ms'])} / "
        f"{_ms(p['get']['p99_ms'])} · {_ms(p['send']['p50_ms'])} / {_ms(p['send']['p99_ms'])} ms, "
        f"{p['get']['errors'] + p['send']['errors']} of {p['get']['requests'] + p['send']['requests']} |",
        f"| | got their job's terminal event: streams · long-polls; waiter errors (reconnects) | "
        f"{st['terminal']} of {r['streams']} · {lp['terminal']} of {r['longpolls']}; {r['client_errors']} "
        f"({st['reconnects']}) |",
        f"| | job finished → waiter saw its end, p50 / p99: streams · long-polls | "
        f"{_ms(ends['streams']['p50_ms'])} / {_ms(ends['streams']['p99_ms'])} · "
        f"{_ms(ends['longpolls']['p50_ms'])} / {_ms(ends['longpolls']['p99_ms'])} ms |",
        f"| | web memory per open stream · per long-poll (RSS of {d['processes']} web processes: before → "
        f"streams open → long-polls open too) | {_ms(per_stream)} · {_ms(r.get('web_rss_per_longpoll_kib'))} KiB "
        f"({b['rss_bytes'] / 2**20:.0f} → {so['rss_bytes'] / 2**20:.0f} → {d['rss_bytes'] / 2**20:.0f} MiB) |",
        f"| | web threads · open descriptors, before → open | {b['threads']} → {d['threads']} · "
        f"{b['fds']} → {d['fds']} |",
        "| | CPU while held, cores: " + " · ".join(cores) + " | " + " · ".join(f"{v:.2f}" for v in cores.values())
        + " |",
    ]


def targets_rows(r: dict[str, Any]) -> list[tuple[str, str, bool]]:
    p, st, lp = r["probe"], r["stream_results"], r["longpoll_results"]
    full = r["streams"] >= 5000 and r["longpolls"] >= 2000
    errors = p["get"]["errors"] + p["send"]["errors"] + r["client_errors"]
    get99 = p["get"]["p99_ms"] if p["get"]["p99_ms"] is not None else float("inf")
    send99 = p["send"]["p99_ms"] if p["send"]["p99_ms"] is not None else float("inf")
    served = st["terminal"] == r["streams"] and lp["terminal"] == r["longpolls"] and r["opened"]["complete"]
    per_stream = r["web_rss_per_stream_kib"]
    return [
        ("5,000 SSE streams + 2,000 long-polls held open on running jobs, each getting its terminal event, with "
         "GET jobs/<id>/ p99 ≤ 50 ms and send-message p99 ≤ 100 ms, no errors"
         + ("" if full else f" (quick run: {r['streams']} + {r['longpolls']})"),
         f"{st['terminal']} + {lp['terminal']} served; GET p99 {get99:.1f} ms, send-message p99 {send99:.1f} ms, "
         f"{errors} errors",
         full and served and get99 <= 50 and send99 <= 100 and errors == 0 and r["held_through_probe"]),
        ("web memory per open stream ≤ 50 KiB",
         f"{_ms(per_stream)} KiB ({r['opened']['streams']} streams open)",
         per_stream is not None and per_stream <= 50 and r["opened"]["streams"] == r["streams"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="500 streams + 200 long-polls on 500 jobs")
    parser.add_argument("--streams", type=int)
    parser.add_argument("--longpolls", type=int)
    parser.add_argument("--jobs", type=int, help="running jobs the waiters follow")
    parser.add_argument("--hold", type=float, help="seconds each job runs (its agent's latency_ms)")
    parser.add_argument("--client-procs", type=int, help="waiter client processes")
    parser.add_argument("--procfile", type=Path, default=PROCFILE, help="another Procfile (to try a candidate layout)")
    parser.add_argument("--json", default=str(VAR / "waiters-latest.json"), help="write the result here")
    args = parser.parse_args()
    terminate_on_signals()
    started = time.monotonic()
    ctx = standalone_setup("waiters")
    result = scenario_waiters(ctx, args.quick, say, args.streams, args.longpolls, args.jobs, args.hold,
                              args.client_procs, args.procfile)
    with open(args.json, "w") as out:
        out.write(json.dumps(result, indent=2))
    print("\n".join(["| scenario | measure | value |", "|---|---|---|", *report_rows(result), "",
                     "| target | measured | met |", "|---|---|---|",
                     *(f"| {n} | {v} | {'yes' if m else 'no'} |" for n, v, m in targets_rows(result))]))
    say(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
