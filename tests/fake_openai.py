"""A small OpenAI-compatible HTTP server on 127.0.0.1, standing in for an LLM
provider so the real `openai` provider code path runs offline. It also serves
/v1/embeddings with deterministic bag-of-words vectors (texts sharing words are
near each other), so the `openai` embedder's real HTTP path runs too."""
from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def fake_embedding(text: str, dimensions: int) -> list[float]:
    """Each lower-cased word adds 1 to a dimension chosen by its sha256; unit length."""
    vector = [0.0] * dimensions
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % dimensions] += 1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def _embeddings_reply(body: dict[str, Any], size: int | None) -> dict[str, Any]:
    texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
    size = size or body.get("dimensions") or 1536  # like text-embedding-3-small when not asked to shorten
    return {"object": "list", "model": body["model"],
            "data": [{"object": "embedding", "index": i, "embedding": fake_embedding(t, size)}
                     for i, t in enumerate(texts)],
            "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)}}


def _chunks(body: dict[str, Any], content: str, usage: dict[str, int], completion_id: str) -> list[bytes]:
    """A streamed chat completion as OpenAI sends it: a chunk per word, the finish, usage if asked, [DONE]."""
    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": body["model"], "choices": choices, **extra}
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    words = re.findall(r"\S+\s*", content)
    events = [event([{"index": 0, "delta": {"role": "assistant", "content": word} if i == 0 else {"content": word},
                      "finish_reason": None}]) for i, word in enumerate(words)]
    events.append(event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append(event([], usage=usage))
    return events + [b"data: [DONE]\n\n"]


class FakeOpenAI:
    """`script` makes it misbehave on purpose, one entry per request (the last one
    repeats): "ok", "500", "429" (with Retry-After: 1), "malformed" (200 with a
    body that is not JSON), "empty" (200 with no answer in it), "timeout" (answers after `slow_seconds`).
    `embedding_dimensions` makes /embeddings ignore the requested size (a model that cannot shorten).
    A request with `stream: true` is answered as an event stream of chunks, as OpenAI does
    ("malformed" then sends an event whose data is not JSON)."""

    def __init__(self, script: list[str] | None = None, slow_seconds: float = 5.0,
                 embedding_dimensions: int | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.embedding_dimensions = embedding_dimensions
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
                if self.path.endswith("/embeddings"):  # the script applies to chat completions only
                    self._answer(_embeddings_reply(body, server.embedding_dimensions))
                    return
                mode = server.script.pop(0) if len(server.script) > 1 else server.script[0]
                streamed = bool(body.get("stream"))
                if mode == "malformed" and streamed:  # an event stream whose data is not JSON
                    self._stream([b"data: not json {\n\n"])
                    return
                if mode == "empty":  # a stream (or completion) that carries no answer at all
                    self._stream([b"data: [DONE]\n\n"]) if streamed else self._answer(
                        {"id": "chatcmpl-empty", "object": "chat.completion", "created": int(time.time()),
                         "model": body["model"], "choices": []})
                    return
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
                content = f"fake-llm heard {last!r} in {len(body['messages'])} messages"
                usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
                if streamed:
                    self._stream(_chunks(body, content, usage, f"chatcmpl-{len(server.requests)}"))
                    return
                reply = {
                    "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion",
                    "created": int(time.time()), "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": usage,
                }
                self._answer(reply)

            def _stream(self, events: list[bytes]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for event in events:
                    self.wfile.write(event)
                    self.wfile.flush()
                self.close_connection = True

            def _answer(self, reply: dict[str, Any]) -> None:
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
