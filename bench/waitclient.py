"""Client processes of `bench.waiters`. Each prints one JSON document on stdout.

    python -m bench.waitclient hold --url H:P --token T --jobs FILE --streams S --longpolls L
        [--slice K/N] [--ready-file F] [--open-timeout s] [--deadline s]
    python -m bench.waitclient probe --url H:P --token T --jobs FILE --agent A --duration s
        [--get-rate r] [--send-rate r] [--timeout s]

`hold` opens S SSE streams (`GET jobs/<id>/events/`) and L long-polls
(`GET jobs/<id>/wait/?timeout=60`) on the jobs listed in FILE (waiter w follows
job w mod len(jobs); with `--slice K/N` this process takes waiters K, K+N, ...),
at most `--open-concurrency` connections being opened at a time. A stream
counts as open once its 200 and headers came back; a long-poll once it was
sent (a held request answers nothing until its job ends). When all are open,
or `--open-timeout` passed, it writes `--ready-file`. Then it follows every
waiter to its job's terminal event: a stream that ends early reconnects with
Last-Event-ID, a long-poll answered `running` after its timeout asks again.

`probe` measures the API while the waiters are held: `GET jobs/<id>/` and
`send-message` in an open loop, latency from when each request was due, a
request not answered `--timeout` seconds after it was due is an error.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
from collections import Counter
from typing import Any

from bench.wire import TERMINAL_EVENTS, TERMINAL_STATUSES, Conn, HTTPError, Pool, raise_nofile, run, sse_events

API = "/api/v1/agentos"


def pct(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] if ordered else None


class Hold:
    def __init__(self, args: argparse.Namespace, jobs: list[str]) -> None:
        self.args = args
        self.host, _, port = args.url.rpartition(":")
        self.port = int(port)
        self.auth = {"Authorization": f"Bearer {args.token}"}
        self.jobs = jobs
        self.gate = asyncio.Semaphore(args.open_concurrency)
        self.started = time.monotonic()
        self.deadline = self.started + args.deadline
        self.streams = {"total": 0, "opened": 0, "terminal": 0, "errors": 0, "reconnects": 0, "no_content": 0}
        self.longpolls = {"total": 0, "sent": 0, "terminal": 0, "errors": 0, "polls": 0, "answered_running": 0}
        self.events: Counter[str] = Counter()
        self.open_ms: list[float] = []
        # when each waiter saw its job's end (time.time(), compared with the job's finished_at)
        self.seen: dict[str, list[list[Any]]] = {"streams": [], "longpolls": []}
        self.examples: list[str] = []
        self.ready: dict[str, Any] | None = None
        self.all_open = asyncio.Event()

    def error(self, where: str, detail: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(f"{where}: {detail}"[:300])

    def remaining(self) -> float:
        return max(0.1, self.deadline - time.monotonic())

    def check_open(self) -> None:
        if (self.streams["opened"] >= self.streams["total"] and self.longpolls["sent"] >= self.longpolls["total"]):
            self.all_open.set()

    async def stream(self, job_id: str) -> None:
        st = self.streams
        last_id: str | None = None
        opened = False
        begin = time.monotonic()
        while time.monotonic() < self.deadline:
            conn = Conn(self.host, self.port, extra_headers=self.auth)
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            try:
                if opened:
                    await conn.send("GET", f"{API}/jobs/{job_id}/events/", headers, timeout=30)
                else:
                    async with self.gate:
                        await conn.send("GET", f"{API}/jobs/{job_id}/events/", headers, timeout=30)
                status, response_headers = await conn.head(timeout=self.remaining())
                if status == 204:  # ended, and we have every event
                    st["no_content"] += 1
                    st["terminal"] += 1
                    self.seen["streams"].append([job_id, time.time()])
                    return
                if status != 200:
                    st["errors"] += 1
                    self.error("sse", f"HTTP {status}")
                    await asyncio.sleep(1.0)
                    continue
                if not opened:
                    opened = True
                    st["opened"] += 1
                    self.open_ms.append((time.monotonic() - begin) * 1000)
                    self.check_open()
                # keepalives come every AGENTOS_SSE_KEEPALIVE_SECONDS (15): 60 s of silence is a dead stream
                async for event in sse_events(conn, status, response_headers, idle_timeout=60):
                    self.events[event.event] += 1
                    if event.id is not None:
                        last_id = event.id
                    if event.event in TERMINAL_EVENTS:
                        st["terminal"] += 1
                        self.seen["streams"].append([job_id, time.time()])
                        return
                st["reconnects"] += 1  # the server ended the stream before the terminal event
                last_id = last_id or "0"
            except HTTPError as exc:
                st["errors"] += 1
                self.error("sse", str(exc))
                last_id = last_id or "0"
                await asyncio.sleep(1.0)
            finally:
                conn.close()

    async def longpoll(self, job_id: str) -> None:
        lp = self.longpolls
        conn = Conn(self.host, self.port, extra_headers=self.auth)
        sent = False
        try:
            while time.monotonic() < self.deadline:
                try:
                    path = f"{API}/jobs/{job_id}/wait/?timeout=60"
                    if sent:
                        await conn.send("GET", path, timeout=30)
                    else:
                        async with self.gate:
                            await conn.send("GET", path, timeout=30)
                        sent = True
                        lp["sent"] += 1
                        self.check_open()
                    lp["polls"] += 1
                    status, headers = await conn.head(timeout=self.remaining())
                    body = b"".join([chunk async for chunk in conn.body_chunks(status, headers, 30)])
                    if not conn.reusable:
                        conn.close()
                    if status != 200:
                        lp["errors"] += 1
                        self.error("longpoll", f"HTTP {status}")
                        await asyncio.sleep(1.0)
                        continue
                    if json.loads(body)["status"] in TERMINAL_STATUSES:
                        lp["terminal"] += 1
                        self.seen["longpolls"].append([job_id, time.time()])
                        return
                    lp["answered_running"] += 1
                except HTTPError as exc:
                    lp["errors"] += 1
                    self.error("longpoll", str(exc))
                    await asyncio.sleep(1.0)
        finally:
            conn.close()

    async def write_ready(self) -> None:
        try:
            await asyncio.wait_for(self.all_open.wait(), self.args.open_timeout)
        except asyncio.TimeoutError:
            pass
        self.ready = {"at": time.time(), "after_s": time.monotonic() - self.started,
                      "streams_opened": self.streams["opened"], "streams": self.streams["total"],
                      "longpolls_sent": self.longpolls["sent"], "longpolls": self.longpolls["total"],
                      "complete": self.all_open.is_set()}
        if self.args.ready_file:
            tmp = self.args.ready_file + ".tmp"
            with open(tmp, "w") as out:
                json.dump(self.ready, out)
            os.replace(tmp, self.args.ready_file)

    async def main(self) -> dict[str, Any]:
        k, n = (int(x) for x in self.args.slice.split("/"))
        tasks = []
        total = self.args.streams + self.args.longpolls
        for w in range(k, total, n):
            job_id = self.jobs[w % len(self.jobs)]
            if w < self.args.streams:
                self.streams["total"] += 1
                tasks.append(self.stream(job_id))
            else:
                self.longpolls["total"] += 1
                tasks.append(self.longpoll(job_id))
        self.check_open()
        ready = asyncio.create_task(self.write_ready())
        await asyncio.gather(*tasks)
        await ready
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"slice": self.args.slice, "streams": self.streams, "longpolls": self.longpolls,
                "events": dict(self.events), "ready": self.ready, "seen": self.seen,
                "open_p50_ms": pct(self.open_ms, 50), "open_p99_ms": pct(self.open_ms, 99),
                "wall_s": time.monotonic() - self.started,
                "timed_out": time.monotonic() >= self.deadline, "error_examples": self.examples,
                "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)), "cpu_s": usage.ru_utime + usage.ru_stime}


async def probe(args: argparse.Namespace, jobs: list[str]) -> dict[str, Any]:
    host, _, port = args.url.rpartition(":")
    auth = {"Authorization": f"Bearer {args.token}"}
    gets, sends = Pool(host, int(port), 64, auth), Pool(host, int(port), 64, auth)
    results: dict[str, dict[str, Any]] = {"get": {"latencies": [], "when": [], "errors": 0, "statuses": Counter()},
                                          "send": {"latencies": [], "when": [], "errors": 0, "statuses": Counter()}}
    examples: list[str] = []
    start = time.perf_counter() + 0.1

    async def one(kind: str, i: int, due: float) -> None:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        r = results[kind]
        try:
            if kind == "get":
                call = gets.request("GET", f"{API}/jobs/{jobs[i % len(jobs)]}/", timeout=args.timeout)
            else:
                body = json.dumps({"agent_id": args.agent, "message": f"probe {i}"}).encode()
                call = sends.request("POST", f"{API}/send-message/", {"Content-Type": "application/json"}, body,
                                     timeout=args.timeout)
            # the request's whole budget counts from when it was due, waiting for a connection included
            response = await asyncio.wait_for(call, max(0.001, due + args.timeout - time.perf_counter()))
            r["statuses"][str(response.status)] += 1
            if response.status != (200 if kind == "get" else 202):
                r["errors"] += 1
                if len(examples) < 10:
                    examples.append(f"{kind}: HTTP {response.status} {response.body[:120]!r}")
        except (HTTPError, asyncio.TimeoutError) as exc:
            r["errors"] += 1
            r["statuses"][exc.__class__.__name__] += 1
            if len(examples) < 10:
                examples.append(f"{kind}: {exc.__class__.__name__} {exc}"[:200])
        r["latencies"].append((time.perf_counter() - due) * 1000)
        r["when"].append(due - start)

    calls = [one("get", i, start + i / args.get_rate) for i in range(int(args.duration * args.get_rate))]
    calls += [one("send", i, start + i / args.send_rate) for i in range(int(args.duration * args.send_rate))]
    await asyncio.gather(*calls)
    gets.close()
    sends.close()
    out: dict[str, Any] = {}
    for kind, r in results.items():
        lat = r["latencies"]
        out[kind] = {"requests": len(lat), "errors": r["errors"], "statuses": dict(r["statuses"]),
                     "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99),
                     "max_ms": max(lat) if lat else None,
                     # the slowest requests, with when each was due (seconds into the probe): a stall shows as a cluster
                     "slowest": sorted(([round(t, 2), round(ms, 1)] for t, ms in zip(r["when"], lat)),
                                       key=lambda pair: -pair[1])[:20]}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {**out, "error_examples": examples, "cpu_s": usage.ru_utime + usage.ru_stime}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["hold", "probe"])
    parser.add_argument("--url", required=True, help="host:port of the web server")
    parser.add_argument("--token", required=True)
    parser.add_argument("--jobs", required=True, help="a JSON file: the job ids to follow / to GET")
    parser.add_argument("--streams", type=int, default=0)
    parser.add_argument("--longpolls", type=int, default=0)
    parser.add_argument("--slice", default="0/1")
    parser.add_argument("--open-concurrency", type=int, default=200)
    parser.add_argument("--open-timeout", type=float, default=60)
    parser.add_argument("--ready-file", default="")
    parser.add_argument("--deadline", type=float, default=600)
    parser.add_argument("--agent", default="")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--get-rate", type=float, default=20)
    parser.add_argument("--send-rate", type=float, default=10)
    parser.add_argument("--timeout", type=float, default=10)
    args = parser.parse_args()
    raise_nofile()
    with open(args.jobs) as handle:
        jobs = json.load(handle)
    result = run(Hold(args, jobs).main()) if args.mode == "hold" else run(probe(args, jobs))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
