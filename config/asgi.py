"""The ASGI application: what gunicorn's uvicorn workers serve (Procfile, Compose, tests).

Clients that wait (SSE on `jobs/<id>/events/`, long-poll on `jobs/<id>/wait/`,
`send-message` with `wait`, the chat page's live stream) are served by async
views: each one is a coroutine, and holds no thread while it waits.

Django's own ASGI handler would still give each request a thread of its own
(`ThreadSensitiveContext` makes a one-thread executor per request, and the
request signals' sync receivers and every `MiddlewareMixin` hop to it), kept
until the response ends: one idle thread per open stream. Here every
request's sync work — sync views, middleware hooks, the ORM calls of async
views — runs instead on one bounded pool of `WEB_THREADS` threads per process,
reused across requests like gunicorn's gthread workers, so a thread is held
only while sync code runs and each keeps a persistent database connection.

Connections then belong to pool threads, not to requests, so the pool tidies
them after every call (close one that errored and is unusable, or outlived
CONN_MAX_AGE), and the per-request `close_old_connections` and `reset_queries`
receivers, which would only act on whichever pool thread the signal happened
to run on (and cost a hop to one), are disconnected. Django's middleware runs
on the event loop for requests an async view answers (apps.opie.middleware).

A poll of a job's status by its owner (`GET jobs/<id>/`, the request clients
repeat most) is answered by `apps.api.fastpath` in one call on those threads,
without the middleware stack; any other case of it takes the full stack.
"""
from __future__ import annotations

import asyncio
import gc
import os
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import django
from asgiref.sync import ThreadSensitiveContext
from django.conf import settings
from django.core import signals
from django.core.handlers.asgi import ASGIHandler
from django.db import close_old_connections, connections, reset_queries

from apps.tracing import asgi_request, configure_tracing, current_trace_id, name_request_span, name_span
from config.logging import log_context

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)  # what django.core.asgi.get_asgi_application() does first

from apps import metrics  # noqa: E402  (reads the settings: after setup)
from apps.api import fastpath  # noqa: E402


def release_connections() -> None:
    """End of a unit of sync work on this thread, as the end of a request is for
    Django: drop a connection that errored and no longer works, or that
    outlived CONN_MAX_AGE (0: every call). A healthy persistent one stays,
    without a health-check query."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and (
                conn.errors_occurred or (conn.close_at is not None and time.monotonic() >= conn.close_at)):
            conn.close_if_unusable_or_obsolete()


class WebThreads(ThreadPoolExecutor):
    """The web process's threads for sync work; each call ends with `release_connections`."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        def call() -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                release_connections()
        return super().submit(call)


class OpieASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self.threads = WebThreads(max_workers=settings.WEB_THREADS, thread_name_prefix="opie-web")
        # what they do per thread is done per call (release_connections); DEBUG's query log is per thread too
        signals.request_started.disconnect(close_old_connections)
        signals.request_started.disconnect(reset_queries)
        signals.request_finished.disconnect(close_old_connections)
        self._loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)  # refused, as Django refuses it
        loop = asyncio.get_running_loop()
        if loop not in self._loops:  # `sync_to_async(thread_sensitive=False)` runs there too
            loop.set_default_executor(self.threads)
            self._loops.add(loop)
        await asgi_request(scope, receive, send, self.serve)  # in its trace's server span (apps.tracing)

    async def serve(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (job_id := fastpath.job_id_of(scope)) is not None:  # a poll: one call on a thread, or the full stack
            answer = await asyncio.get_running_loop().run_in_executor(self.threads, fastpath.job_status, scope, job_id)
            if answer is not None:
                name_span("GET", fastpath.ROUTE)
                body, headers = answer
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        async with ThreadSensitiveContext(executor=self.threads):
            await self.handle(scope, receive, send)

    async def get_response_async(self, request: Any) -> Any:
        # the request's lines carry its trace id, as a job's lines do in the worker (none when tracing is off)
        with log_context(trace_id=current_trace_id()):
            response = await super().get_response_async(request)
        name_request_span(request)
        return response

    @staticmethod
    async def _lifespan(receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                tune_gc()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                metrics.process_exit()  # its open-streams gauge stops counting at once
                await send({"type": "lifespan.shutdown.complete"})
                return


def tune_gc() -> None:
    """Once the app is loaded: what is alive now (Django, the URLconf, the API's schemas:
    most of a process's objects) is left out of every later collection, and young
    objects are collected less often (WEB_GC_THRESHOLDS), so a full collection, which
    walks every object the open streams and long-polls hold, seldom stops the loop."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*settings.WEB_GC_THRESHOLDS)


configure_tracing("opie-web")  # before the handler loads the middleware: Django's instrumentation adds one
application = OpieASGIHandler()
