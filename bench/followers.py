"""Client process of `bench.realpath`: sends echo jobs with a callback_url and
follows them the way real clients do. Prints one JSON document on stdout.

    python -m bench.followers --url 127.0.0.1:8000 --token T --agent A --count N
        [--connections 32] [--rate R] [--callback URL] [--mix webhook,longpoll,sse,poll]

Closed loop by default (`--connections` submitters, each sending its next job
as soon as the last was accepted); with `--rate`, open loop: request i is due
at start + i/rate whatever the earlier answers did, and its latency counts
from when it was due. Job i is followed by mode `mix[i % len(mix)]`:

- `webhook`: nothing more (the receiver gets its webhook);
- `longpoll`: `GET jobs/<id>/wait/?timeout=30` on its own connection, again until terminal;
- `sse`: `GET jobs/<id>/events/` on its own connection until the terminal event
  (reconnecting with Last-Event-ID if the stream ends before it);
- `poll`: `GET jobs/<id>/` once a second (over a shared pool) until terminal.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections import defaultdict
from typing import Any

from bench.wire import TERMINAL_EVENTS, TERMINAL_STATUSES, Conn, HTTPError, Pool, raise_nofile, run, sse_events

API = "/api/v1/agentos"
MODES = ("webhook", "longpoll", "sse", "poll")


def pct(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] if ordered else None


class Followers:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.host, _, port = args.url.rpartition(":")
        self.port = int(port)
        self.auth = {"Authorization": f"Bearer {args.token}"}
        self.agents = args.agent.split(",")
        self.mix = [m for m in args.mix.split(",") if m] or ["webhook"]
        unknown = set(self.mix) - set(MODES)
        if unknown:
            raise SystemExit(f"unknown follow mode(s): {', '.join(sorted(unknown))}")
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = defaultdict(int)
        self.job_ids: list[str] = []
        self.first_submit: float | None = None
        self.last_accepted: float | None = None
        self.follow: dict[str, dict[str, Any]] = {
            m: {"jobs": 0, "terminal": 0, "errors": 0, "requests": 0, "reconnects": 0, "seen_ms": []}
            for m in self.mix}
        self.error_examples: list[str] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def error(self, where: str, detail: str) -> None:
        if len(self.error_examples) < 20:
            self.error_examples.append(f"{where}: {detail}"[:300])

    async def submit(self, pool: Pool, i: int, due: float | None) -> None:
        body = {"agent_id": self.agents[i % len(self.agents)], "message": f"bench {i}"}
        if self.args.callback:
            body["callback_url"] = self.args.callback
        raw = json.dumps(body).encode()
        begin = time.perf_counter() if due is None else due
        if self.first_submit is None:
            self.first_submit = time.time()
        try:
            response = await pool.request("POST", f"{API}/send-message/",
                                          {**self.auth, "Content-Type": "application/json"}, raw, timeout=120)
            key = str(response.status)
        except HTTPError as exc:
            response, key = None, exc.__class__.__name__
            self.error("submit", str(exc))
        self.latencies.append((time.perf_counter() - begin) * 1000)
        self.statuses[key] += 1
        if response is not None and response.status == 202:
            job_id = response.json()["job_id"]
            self.job_ids.append(job_id)
            self.last_accepted = time.time()
            mode = self.mix[i % len(self.mix)]
            self.follow[mode]["jobs"] += 1
            if mode != "webhook":
                task = asyncio.create_task(self.follow_job(mode, job_id, time.perf_counter()))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        elif response is not None:
            self.error("submit", f"HTTP {response.status} {response.body[:200]!r}")

    async def follow_job(self, mode: str, job_id: str, accepted: float) -> None:
        stats = self.follow[mode]
        done = await {"poll": self.poll, "longpoll": self.longpoll, "sse": self.sse}[mode](job_id, stats)
        if done:
            stats["terminal"] += 1
            stats["seen_ms"].append((time.perf_counter() - accepted) * 1000)

    async def poll(self, job_id: str, stats: dict[str, Any]) -> bool:
        while True:
            await asyncio.sleep(1.0)
            stats["requests"] += 1
            try:
                response = await self.poll_pool.request("GET", f"{API}/jobs/{job_id}/", self.auth, timeout=30)
            except HTTPError as exc:
                stats["errors"] += 1
                self.error("poll", str(exc))
                continue
            if response.status != 200:
                stats["errors"] += 1
                self.error("poll", f"HTTP {response.status}")
                continue
            if response.json()["status"] in TERMINAL_STATUSES:
                return True

    async def longpoll(self, job_id: str, stats: dict[str, Any]) -> bool:
        conn = Conn(self.host, self.port, extra_headers=self.auth)
        try:
            while True:
                stats["requests"] += 1
                try:
                    response = await conn.request("GET", f"{API}/jobs/{job_id}/wait/?timeout=30", timeout=60)
                except HTTPError as exc:
                    stats["errors"] += 1
                    self.error("longpoll", str(exc))
                    await asyncio.sleep(1.0)
                    continue
                if response.status != 200:
                    stats["errors"] += 1
                    self.error("longpoll", f"HTTP {response.status}")
                    await asyncio.sleep(1.0)
                    continue
                if response.json()["status"] in TERMINAL_STATUSES:
                    return True
        finally:
            conn.close()

    async def sse(self, job_id: str, stats: dict[str, Any]) -> bool:
        last_id: str | None = None
        while True:
            conn = Conn(self.host, self.port, extra_headers=self.auth)
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
                stats["reconnects"] += 1
            stats["requests"] += 1
            try:
                await conn.send("GET", f"{API}/jobs/{job_id}/events/", headers, timeout=30)
                status, response_headers = await conn.head(timeout=60)
                if status == 204:
                    return True
                if status != 200:
                    stats["errors"] += 1
                    self.error("sse", f"HTTP {status}")
                    await asyncio.sleep(1.0)
                    continue
                async for event in sse_events(conn, status, response_headers, idle_timeout=60):
                    if event.id is not None:
                        last_id = event.id
                    if event.event in TERMINAL_EVENTS:
                        return True
                last_id = last_id or "0"  # ended before the terminal event: reconnect and resume
            except HTTPError as exc:
                stats["errors"] += 1
                self.error("sse", str(exc))
                last_id = last_id or "0"
                await asyncio.sleep(1.0)
            finally:
                conn.close()

    async def main(self) -> dict[str, Any]:
        args = self.args
        pool = Pool(self.host, self.port, args.connections)
        self.poll_pool = Pool(self.host, self.port, args.poll_connections, headers=self.auth)
        started = time.perf_counter()
        if args.rate:
            start = time.perf_counter() + 0.2

            async def due(i: int) -> None:
                when = start + i / args.rate
                await asyncio.sleep(max(0.0, when - time.perf_counter()))
                await self.submit(pool, i, when)

            sending = asyncio.gather(*(due(i) for i in range(args.count)))
        else:
            counter = iter(range(args.count))

            async def submitter() -> None:
                for i in counter:
                    await self.submit(pool, i, None)

            sending = asyncio.gather(*(submitter() for _ in range(args.connections)))
        deadline = time.perf_counter() + args.deadline
        timed_out = False
        try:
            await asyncio.wait_for(sending, args.deadline)
            submit_wall = time.perf_counter() - started
            while self.tasks and time.perf_counter() < deadline:
                await asyncio.wait(set(self.tasks), timeout=max(0.1, deadline - time.perf_counter()))
        except asyncio.TimeoutError:
            submit_wall = time.perf_counter() - started
        if self.tasks:
            timed_out = True
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        pool.close()
        self.poll_pool.close()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        follow = {}
        for mode, stats in self.follow.items():
            seen = stats.pop("seen_ms")
            follow[mode] = {**stats, "seen_p50_ms": pct(seen, 50), "seen_p99_ms": pct(seen, 99)}
        return {"requests": args.count, "latencies_ms": self.latencies, "statuses": dict(self.statuses),
                "job_ids": self.job_ids, "first_submit": self.first_submit, "last_accepted": self.last_accepted,
                "submit_wall_s": submit_wall, "wall_s": time.perf_counter() - started, "follow": follow,
                "timed_out": timed_out, "error_examples": self.error_examples,
                "cpu_s": usage.ru_utime + usage.ru_stime}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="host:port of the web server")
    parser.add_argument("--token", required=True)
    parser.add_argument("--agent", required=True, help="agent id, or several separated by commas")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--connections", type=int, default=32, help="connections that send messages")
    parser.add_argument("--poll-connections", type=int, default=32, help="connections shared by the pollers")
    parser.add_argument("--rate", type=float, default=0, help="open loop at this many requests a second")
    parser.add_argument("--callback", default="", help="callback_url for every job")
    parser.add_argument("--mix", default="webhook", help=f"follow modes, comma separated: {', '.join(MODES)}")
    parser.add_argument("--deadline", type=float, default=600, help="give up after this many seconds")
    args = parser.parse_args()
    raise_nofile()
    print(json.dumps(run(Followers(args).main())))


if __name__ == "__main__":
    main()
