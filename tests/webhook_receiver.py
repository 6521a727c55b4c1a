"""A real HTTP receiver on 127.0.0.1 that records what it gets and answers from a script.

It speaks HTTP/1.1 with keep-alive, as real receivers do, so a sender that
reuses connections does here too; each request records the client's port,
and `connections` counts the TCP connections accepted. Leaving the `with`
block closes the connections still open, so none outlives the receiver.
"""
from __future__ import annotations

import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a sender that hung up (timed out) is no receiver bug
            super().handle_error(request, client_address)


class Receiver:
    def __init__(self, statuses: list[int] | None = None, headers: dict[str, str] | None = None,
                 delay: float = 0.0) -> None:
        self.statuses = list(statuses or [200])
        self.extra_headers = headers or {}
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive unless the client closes
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with receiver._lock:
                    receiver.connections += 1
                    receiver._open.add(self.connection)

            def finish(self) -> None:
                with receiver._lock:
                    receiver._open.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                at = time.time()  # before the status is chosen: a request stamped after a switch gets the new one
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                # the status it answered, so a test can count what the receiver accepted
                receiver.requests.append({"path": self.path, "body": body, "at": at, "status": status,
                                          "client_port": self.client_address[1],
                                          "headers": {k.lower(): v for k, v in self.headers.items()}})
                time.sleep(receiver.delay)
                self.send_response(status)
                for key, value in receiver.extra_headers.items():
                    self.send_header(key, value)
                if 300 <= status < 400:
                    self.send_header("Location", f"{receiver.url}/redirected")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def wait_for(self, count: int = 1, timeout: float = 15.0, settle: float = 0.5) -> list[dict[str, Any]]:
        """The requests once `count` have arrived, after `settle` more seconds in which a duplicate would show."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            assert time.monotonic() < deadline, f"{len(self.requests)} of {count} webhooks arrived in {timeout} s"
            time.sleep(0.05)
        time.sleep(settle)
        return self.requests

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        with self._lock:
            still_open = list(self._open)
        for conn in still_open:  # a kept-alive connection would otherwise reach this receiver's handler later
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
