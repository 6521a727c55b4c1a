"""The client of `bench.agentos`, its own process so it never shares the server's time slices.

    python -m bench.agentos_client MODE --url U --agent A --count N --connections C [--token T] [--poll S]

Every run is its own session, posted to `POST /agents/<agent>/runs`; MODE says
how, and how its completion is seen:

* `sync`: `stream=false`; the answer is the completion.
* `poll`: `background=true, stream=false`: a 202 with the run id, then agno's
  run status route, `GET /agents/<agent>/runs/<run_id>?session_id=...`, every
  `--poll` seconds until the run is COMPLETED, ERROR or CANCELLED (so a
  completion is seen up to one interval late). How agno documents following a
  background run: one without a stream has no event stream.
* `stream`: `background=true, stream=true`: the same durable acceptance, and
  the response tails the run's events (SSE) until RunCompleted, RunError or
  RunCancelled.

Wall time is this process's clock, from the first submission to the last
completion. Prints one JSON document on stdout.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import time
import uuid
from typing import Any

import httpx

TERMINAL = {"COMPLETED", "ERROR", "CANCELLED"}
TERMINAL_EVENTS = {"RunCompleted": "COMPLETED", "RunError": "ERROR", "RunCancelled": "CANCELLED"}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    tls = ssl.create_default_context()  # plain HTTP here; one context instead of loading CAs per lane
    # One client of one connection per lane, run i on lane i % connections: httpx's pool
    # walks all its connections on every request (quadratic CPU at hundreds), and a lane
    # busy every poll interval is never idle long enough for the server to close it
    # under a request (uvicorn drops keep-alive connections idle for 5 s).
    lanes = [httpx.AsyncClient(base_url=args.url, headers=headers, timeout=httpx.Timeout(args.timeout), verify=tls,
                               limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
             for _ in range(min(args.connections, args.count))]
    gates = [asyncio.Lock() for _ in lanes]
    path = f"/agents/{args.agent}/runs"
    outcomes: dict[str, int] = {}
    ends: list[float] = []
    accepted: list[float] = []
    polls = 0

    def outcome(key: str) -> None:
        outcomes[key] = outcomes.get(key, 0) + 1
        ends.append(time.perf_counter())

    def form(i: int, **fields: str) -> dict[str, str]:
        return {"message": f"bench {i}", "session_id": str(uuid.uuid4()), **fields}

    async def sync_run(client: httpx.AsyncClient, i: int) -> None:
        response = await client.post(path, data=form(i, stream="false"))
        status = response.json().get("status") if response.status_code == 200 else None
        outcome(status or f"http {response.status_code}")

    async def poll(client: httpx.AsyncClient, url: str, session_id: str) -> httpx.Response:
        nonlocal polls
        polls += 1
        try:
            return await client.get(url, params={"session_id": session_id})
        except httpx.TransportError:  # a GET is safe to send again, once
            return await client.get(url, params={"session_id": session_id})

    async def poll_run(client: httpx.AsyncClient, i: int) -> None:
        response = await client.post(path, data=form(i, stream="false", background="true"))
        if response.status_code != 202:
            outcome(f"http {response.status_code}")
            return
        accepted.append(time.perf_counter())
        body = response.json()
        deadline = time.perf_counter() + args.timeout
        while time.perf_counter() < deadline:
            await asyncio.sleep(args.poll)
            polled = await poll(client, f"{path}/{body['run_id']}", body["session_id"])
            status = polled.json().get("status") if polled.status_code == 200 else None
            if status in TERMINAL:
                outcome(status)
                return
        outcome("timed out")

    async def stream_run(client: httpx.AsyncClient, i: int) -> None:
        async with client.stream("POST", path, data=form(i, stream="true", background="true")) as response:
            if response.status_code != 200:
                outcome(f"http {response.status_code}")
                return
            accepted.append(time.perf_counter())
            seen = None
            async for line in response.aiter_lines():  # to its end: the server closes it after the run's last event
                if seen is None and line.startswith("event:") and line[6:].strip() in TERMINAL_EVENTS:
                    seen = TERMINAL_EVENTS[line[6:].strip()]
                    outcome(seen)
            if seen is None:
                outcome("stream ended early")

    one = {"sync": sync_run, "poll": poll_run, "stream": stream_run}[args.mode]

    async def guarded(i: int) -> None:
        async with gates[i % len(lanes)]:  # a lane carries one run at a time
            try:
                await one(lanes[i % len(lanes)], i)
            except httpx.HTTPError as exc:
                outcome(exc.__class__.__name__)

    cpu = _cpu_s()
    started = time.perf_counter()
    await asyncio.gather(*(guarded(i) for i in range(args.count)))
    cpu = _cpu_s() - cpu
    for lane in lanes:
        await lane.aclose()
    return {"mode": args.mode, "runs": args.count, "connections": len(lanes), "outcomes": outcomes,
            "ok": outcomes.get("COMPLETED", 0), "failed": args.count - outcomes.get("COMPLETED", 0),
            "wall_s": max(ends) - started, "accepted_s": (max(accepted) - started) if accepted else None,
            "polls": polls, "poll_s": args.poll if args.mode == "poll" else None, "client_cpu_s": cpu}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["sync", "poll", "stream"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--agent", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between status polls (poll)")
    parser.add_argument("--timeout", type=float, default=300)
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
