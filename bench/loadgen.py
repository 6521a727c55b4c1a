"""Load generator, run as its own process so it never shares the server's CPU time slices.

    python -m bench.loadgen opie --url U --token T --agent A --count N [--rate R] [--connections C]
    python -m bench.loadgen agentos --url U --agent A --count N --connections C

Open loop when --rate is given: request i is due at start + i/rate whatever the
earlier answers, and its latency counts from when it was due (so a slow server
cannot hide its queueing). Prints one JSON document on stdout.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import httpx


async def run(args: argparse.Namespace) -> dict:
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    job_ids: list[str] = []
    gate = asyncio.Semaphore(args.connections)
    async with httpx.AsyncClient(base_url=args.url, limits=limits, timeout=120) as client:
        start = time.perf_counter() + 0.2

        async def one(i: int) -> None:
            due = start + (i / args.rate if args.rate else 0)
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            async with gate:
                begin = due if args.rate else time.perf_counter()
                try:
                    if args.mode == "opie":
                        response = await client.post(
                            "/api/v1/agentos/send-message/", json={"agent_id": args.agent, "message": f"bench {i}"},
                            headers={"Authorization": f"Bearer {args.token}"})
                        if response.status_code == 202:
                            job_ids.append(response.json()["job_id"])
                    else:
                        response = await client.post(
                            f"/agents/{args.agent}/runs",
                            data={"message": f"bench {i}", "stream": "false", "session_id": str(uuid.uuid4())},
                            headers={"Authorization": f"Bearer {args.token}"})
                    key = str(response.status_code)
                except httpx.HTTPError as exc:
                    key = exc.__class__.__name__
                latencies.append((time.perf_counter() - begin) * 1000)
                statuses[key] = statuses.get(key, 0) + 1

        wall = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(args.count)))
        wall = time.perf_counter() - wall
    return {"latencies_ms": latencies, "statuses": statuses, "job_ids": job_ids, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["opie", "agentos"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--agent", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0)
    parser.add_argument("--connections", type=int, default=64)
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
