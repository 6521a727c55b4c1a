"""Webhook receiver for the real-path benchmarks, in its own process:

    python -m bench.receiver --port P --secret whsec_... [--verify-every 20]

A plain asyncio HTTP/1.1 server (uvloop) that answers every POST 200 at once
and records its arrival time (time.time(), the clock the clients also use),
the path's tag (`/hook/<tag>`: one per scenario), `webhook-id`, the job id and
the event type. One webhook in `--verify-every` (and the first of each tag) is
checked against the Standard Webhooks signature with the user's secret.

Control endpoints (GET): `/_stats?tag=T` counts, `/_dump?tag=T` every record,
`/_health`. Prints `listening <port>` once it listens.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.wire import raise_nofile, run

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class Receiver:
    def __init__(self, secret: str, verify_every: int) -> None:
        from standardwebhooks.webhooks import Webhook

        self.webhook = Webhook(secret)
        self.verify_every = max(1, verify_every)
        # tag -> list of [arrival, webhook_id, job_id, type]
        self.records: dict[str, list[list[Any]]] = defaultdict(list)
        self.verified: dict[str, int] = defaultdict(int)
        self.bad: dict[str, list[str]] = defaultdict(list)

    def record(self, tag: str, headers: dict[str, str], body: bytes) -> None:
        arrived = time.time()
        webhook_id = headers.get("webhook-id", "")
        try:
            payload = json.loads(body)
            job_id, kind = payload["data"]["job_id"], payload["type"]
        except (ValueError, KeyError, TypeError):
            job_id, kind = "", "unparseable"
        records = self.records[tag]
        records.append([arrived, webhook_id, job_id, kind])
        if len(records) % self.verify_every == 1 or self.verify_every == 1:
            try:
                self.webhook.verify(body, {k: v for k, v in headers.items() if k.startswith("webhook-")})
                self.verified[tag] += 1
            except Exception as exc:  # WebhookVerificationError and anything malformed
                self.bad[tag].append(f"{webhook_id}: {exc}"[:200])

    def stats(self, tag: str) -> dict[str, Any]:
        records = self.records.get(tag, [])
        return {"tag": tag, "received": len(records), "unique_webhook_ids": len({r[1] for r in records}),
                "jobs": len({r[2] for r in records}), "first": min((r[0] for r in records), default=None),
                "last": max((r[0] for r in records), default=None), "verified": self.verified.get(tag, 0),
                "bad_signatures": len(self.bad.get(tag, [])), "bad_examples": self.bad.get(tag, [])[:5]}

    def control(self, target: str) -> bytes:
        parts = urlsplit(target)
        tag = parse_qs(parts.query).get("tag", [""])[0]
        if parts.path == "/_stats":
            body: Any = self.stats(tag)
        elif parts.path == "/_dump":
            body = {**self.stats(tag), "records": self.records.get(tag, [])}
        else:
            body = {"ok": True}
        raw = json.dumps(body).encode()
        return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
                .encode() + raw)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target = (lines[0].split(" ") + ["", ""])[:2]
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                if method == "POST" and target.startswith("/hook/"):
                    self.record(target[len("/hook/"):], headers, body)
                    writer.write(OK)
                else:
                    writer.write(self.control(target))
                if headers.get("connection", "").lower() == "close":
                    await writer.drain()
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            return
        finally:
            writer.close()


async def serve(args: argparse.Namespace) -> None:
    receiver = Receiver(args.secret, args.verify_every)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", args.port, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--verify-every", type=int, default=20)
    raise_nofile()
    try:
        run(serve(parser.parse_args()))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
