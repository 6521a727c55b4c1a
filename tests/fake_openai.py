"""A small OpenAI-compatible HTTP server on 127.0.0.1, standing in for an LLM
provider so the real `openai` provider code path runs offline."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAI:
    """`script` makes it misbehave on purpose, one entry per request (the last one
    repeats): "ok", "500", "429" (with Retry-After: 1), "malformed" (200 with a
    body that is not JSON), "timeout" (answers after `slow_seconds`)."""

    def __init__(self, script: list[str] | None = None, slow_seconds: float = 5.0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script = list(script or ["ok"])
        self.slow_seconds = slow_seconds
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                        "body": body, "at": time.monotonic()})
                mode = server.script.pop(0) if len(server.script) > 1 else server.script[0]
                if mode in ("500", "429", "malformed"):
                    data = b"not json {" if mode == "malformed" else b'{"error": {"message": "provider trouble"}}'
                    self.send_response(200 if mode == "malformed" else int(mode))
                    self.send_header("Content-Type", "application/json")
                    if mode == "429":
                        self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if mode == "timeout":
                    time.sleep(server.slow_seconds)
                last = body["messages"][-1]["content"]
                reply = {
                    "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion",
                    "created": int(time.time()), "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant",
                                             "content": f"fake-llm heard {last!r} in {len(body['messages'])} messages"}}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
