"""A small asyncio HTTP/1.1 client for the real-path benchmarks' client processes.

Thousands of open streams and a few hundred requests a second must not make
the client the limit on two shared cores: httpx costs about a millisecond of
CPU per request, this costs a fraction of that. It speaks only what the
benchmarks need: keep-alive requests with Content-Length or chunked bodies,
and Server-Sent Events read incrementally from a chunked (or close-delimited)
body. No TLS, no redirects, no proxies.
"""
from __future__ import annotations

import asyncio
import json
import resource
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

TERMINAL_EVENTS = frozenset({"job.succeeded", "job.failed", "job.cancelled", "job.expired"})
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "expired"})


class HTTPError(Exception):
    """Anything that went wrong on the wire (connect, reset, timeout, a malformed answer)."""


def raise_nofile() -> tuple[int, int]:
    """Soft file-descriptor limit up to the hard one (thousands of sockets in one process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def run(main: Any) -> Any:
    """asyncio.run on uvloop when it is installed (it is: uvicorn's)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main)
    return uvloop.run(main)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Conn:
    """One keep-alive connection; reopened transparently when the server closed it."""

    host: str
    port: int
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    reusable: bool = False
    extra_headers: dict[str, str] = field(default_factory=dict)

    async def _open(self, timeout: float) -> None:
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=1 << 20), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise HTTPError(f"connect: {exc.__class__.__name__}: {exc}") from exc
        self.reusable = True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
        self.reusable = False

    async def send(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None,
                   timeout: float = 10.0) -> None:
        if not self.reusable or self.writer is None or self.writer.is_closing():
            self.close()
            await self._open(timeout)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for name, value in {**self.extra_headers, **(headers or {})}.items():
            lines.append(f"{name}: {value}")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        assert self.writer is not None
        try:
            self.writer.write(head + body if body else head)
            await asyncio.wait_for(self.writer.drain(), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self.close()
            raise HTTPError(f"send: {exc.__class__.__name__}: {exc}") from exc

    async def head(self, timeout: float) -> tuple[int, dict[str, str]]:
        assert self.reader is not None
        try:
            raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        except asyncio.IncompleteReadError as exc:
            self.close()
            raise HTTPError("closed before the response") from exc
        except (OSError, asyncio.TimeoutError, asyncio.LimitOverrunError) as exc:
            self.close()
            raise HTTPError(f"response: {exc.__class__.__name__}") from exc
        lines = raw.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError) as exc:
            self.close()
            raise HTTPError(f"bad status line {lines[0][:80]!r}") from exc
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("connection", "").lower() == "close":
            self.reusable = False
        return status, headers

    async def body_chunks(self, status: int, headers: dict[str, str], timeout: float) -> AsyncIterator[bytes]:
        """The body as it arrives; `timeout` bounds each read (a stream's gap between events)."""
        assert self.reader is not None
        reader = self.reader
        try:
            if status in (204, 304) or 100 <= status < 200:
                return
            if "content-length" in headers:
                length = int(headers["content-length"])
                if length:
                    yield await asyncio.wait_for(reader.readexactly(length), timeout)
                return
            if "chunked" in headers.get("transfer-encoding", "").lower():
                while True:
                    size_line = await asyncio.wait_for(reader.readline(), timeout)
                    if not size_line:
                        raise HTTPError("closed inside a chunked body")
                    size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while (await asyncio.wait_for(reader.readline(), timeout)) not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return
                    data = await asyncio.wait_for(reader.readexactly(size + 2), timeout)
                    yield data[:-2]
            self.reusable = False  # delimited by the connection closing
            while True:
                data = await asyncio.wait_for(reader.read(65536), timeout)
                if not data:
                    return
                yield data
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            self.close()
            raise HTTPError(f"body: {exc.__class__.__name__}") from exc

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                      body: bytes | None = None, timeout: float = 10.0) -> Response:
        """One request and its whole answer; raises HTTPError (the connection is then closed)."""
        async def exchange() -> Response:
            await self.send(method, path, headers, body, timeout)
            status, response_headers = await self.head(timeout)
            parts = [chunk async for chunk in self.body_chunks(status, response_headers, timeout)]
            if not self.reusable:
                self.close()
            return Response(status, response_headers, b"".join(parts))

        try:
            return await asyncio.wait_for(exchange(), timeout)
        except asyncio.TimeoutError as exc:
            self.close()
            raise HTTPError("timeout") from exc


class Pool:
    """A fixed number of keep-alive connections shared by many coroutines."""

    def __init__(self, host: str, port: int, size: int, headers: dict[str, str] | None = None) -> None:
        self._free: asyncio.Queue[Conn] = asyncio.Queue()
        for _ in range(size):
            self._free.put_nowait(Conn(host, port, extra_headers=dict(headers or {})))

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                      body: bytes | None = None, timeout: float = 10.0) -> Response:
        conn = await self._free.get()
        try:
            return await conn.request(method, path, headers, body, timeout)
        except BaseException:  # cancelled mid-answer too: never hand on a connection with a response half read
            conn.close()
            raise
        finally:
            self._free.put_nowait(conn)

    def close(self) -> None:
        while not self._free.empty():
            self._free.get_nowait().close()


@dataclass
class Event:
    event: str
    data: str
    id: str | None = None


async def sse_events(conn: Conn, status: int, headers: dict[str, str], idle_timeout: float) -> AsyncIterator[Event]:
    """Parse a text/event-stream body into events (comments and `retry:` lines skipped)."""
    buffer = b""
    async for chunk in conn.body_chunks(status, headers, idle_timeout):
        buffer += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            event, data, event_id = "message", [], None
            for line in block.decode("utf-8", "replace").split("\n"):
                if not line or line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    event_id = value
            if data or event_id is not None:
                yield Event(event, "\n".join(data), event_id)
