"""Distributed tracing (OpenTelemetry): one trace per job, across the web and worker processes.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
set; then each process exports over OTLP/HTTP, configured by the standard `OTEL_*`
variables (service name, headers, sampler, batch sizes). `configure_tracing` is called
once per process: the web's (config/asgi.py, config/wsgi.py) and every worker's
(workers/signals.py, `worker_init`). It instruments Django (the request's span), Celery
(the publish and the task run, with the context in the message headers), httpx (model
providers, embeddings, webhook POSTs) and psycopg (every statement, never its
parameters). What no instrumentation covers gets a span of ours: the queue wait, the
claim, history, retrieval, each model call and tool call, the reply write and each
webhook attempt.

**The job's trace.** `job_create` stores the accepting request's span as a W3C
`traceparent` on the job row (`Job.trace_context`), because a job is published later
and maybe by another process: on commit, by a worker's ending that admits the next job
of its user, or by the sweeper's re-send. Every publish runs in the stored context
(`in_trace`), so Celery's publish span and the message headers belong to the job's
trace whoever sends it; the worker's run continues the trace from the headers, and
falls back to the row when a message carries none. A webhook attempt reads its job's
row too.

**No content.** Spans carry the public job, agent and session ids, model and tool
names and token counts, never message text, prompts, replies, tool arguments or
secrets: SQL parameters are not recorded, and URLs lose their query string.
"""
from __future__ import annotations

import contextvars
import os
import threading
from contextlib import contextmanager
from datetime import datetime
from functools import wraps
from typing import Any, Callable, Iterator, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

F = TypeVar("F", bound=Callable[..., Any])

tracer = trace.get_tracer("opie")
_propagator = TraceContextTextMapPropagator()
_lock = threading.Lock()
_configured = False
# the public ids every span of the job's own carries, set for the job's run (job_trace); never mutated
_job_attributes: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar(
    "opie_job_span_attributes", default={})  # noqa: B039


def tracing_requested() -> bool:
    """Whether the environment asks for traces (an OTLP endpoint is set and the SDK is not disabled)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure_tracing(service_name: str, *, exporter: Any = None) -> bool:
    """Set up this process's tracer provider and instrumentation, once; returns whether
    tracing is on. Without an OTLP endpoint in the environment it does nothing, unless a
    test hands in an `exporter` (the SDK's in-memory one), which then gets every span at
    once. `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` win over `service_name`."""
    global _configured
    with _lock:
        if _configured:
            return True
        if exporter is None and not tracing_requested():
            return False
        named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
        provider = TracerProvider(resource=Resource.create({} if named else {SERVICE_NAME: service_name}))
        if exporter is None:
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _instrument()
        _configured = True
        return True


def _instrument() -> None:
    # adds its middleware to settings.MIDDLEWARE: before the ASGI/WSGI handler loads it
    DjangoInstrumentor().instrument(request_hook=_no_query_django)
    CeleryInstrumentor().instrument()
    HTTPXClientInstrumentor().instrument(request_hook=_no_query_httpx)
    PsycopgInstrumentor().instrument()  # statements only: capture_parameters stays off


def uninstrument() -> None:
    """Undo `_instrument` (tests); the provider stays, spans of ours still reach it."""
    global _configured
    for instrumentor in (DjangoInstrumentor(), CeleryInstrumentor(), HTTPXClientInstrumentor(),
                         PsycopgInstrumentor()):
        instrumentor.uninstrument()
    _configured = False


_URL_ATTRIBUTES = ("url.full", "http.url", "http.target")


def _strip_query(span: Any) -> None:
    """A URL's query string may hold a token (a callback URL's, a client's): spans keep the rest."""
    attributes = getattr(span, "attributes", None) or {}
    for key in _URL_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str) and "?" in value:
            span.set_attribute(key, value.split("?", 1)[0])
    if isinstance(attributes.get("url.query"), str):
        span.set_attribute("url.query", "")


def _no_query_httpx(span: Any, request: Any) -> None:
    _strip_query(span)


def _no_query_django(span: Any, request: Any) -> None:
    _strip_query(span)


# --- the web's request span under ASGI ----------------------------------------------------------------------
# Django's instrumentation makes the request's span only for WSGI unless
# opentelemetry-instrumentation-asgi is installed, which it is not: config/asgi.py makes it here.

async def asgi_request(scope: dict[str, Any], receive: Any, send: Any, handle: Callable[..., Any]) -> None:
    """Serve one HTTP request inside a server span (the client's traceparent, if any, is its parent)."""
    if not _configured:
        return await handle(scope, receive, send)
    headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope.get("headers", [])}
    method = scope.get("method", "GET")
    with tracer.start_as_current_span(method, context=_propagator.extract(headers), kind=trace.SpanKind.SERVER,
                                      attributes={"http.request.method": method, "url.path": scope.get("path", ""),
                                                  "url.scheme": scope.get("scheme", "http")}) as span:
        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                span.set_attribute("http.response.status_code", message["status"])
                if message["status"] >= 500:
                    span.set_status(trace.StatusCode.ERROR)
            await send(message)
        await handle(scope, receive, sending)


def name_request_span(request: Any) -> None:
    """`<method> <route>` (e.g. `POST api/v1/agentos/send-message/`), once the URL is resolved."""
    match = getattr(request, "resolver_match", None)
    if match is not None and match.route:
        name_span(request.method, match.route)


def name_span(method: str, route: str) -> None:
    span = trace.get_current_span()
    if span.is_recording():
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)


# --- the job's trace --------------------------------------------------------------------------------------

def current_traceparent() -> str:
    """The current span as a W3C traceparent (`00-<trace id>-<span id>-<flags>`); '' when there is none."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent", "")


def trace_id(traceparent: str) -> str | None:
    """The trace id (32 hex digits) a stored traceparent names, or None."""
    parts = traceparent.split("-") if traceparent else []
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def _context(traceparent: str) -> otel_context.Context | None:
    if not traceparent:
        return None
    ctx = _propagator.extract({"traceparent": traceparent})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def current_trace_id() -> str | None:
    """The current span's trace id (32 hex digits), or None outside any trace."""
    current = trace.get_current_span().get_span_context()
    return format(current.trace_id, "032x") if current.is_valid else None


@contextmanager
def in_trace(traceparent: str) -> Iterator[None]:
    """Run the block in the trace `traceparent` names: under the current span when it is in
    that trace already (a task that came with the job's headers), else under the stored one."""
    ctx = _context(traceparent)
    token = None
    if ctx is not None and current_trace_id() != trace_id(traceparent):
        token = otel_context.attach(ctx)
    try:
        yield
    finally:
        if token is not None:
            otel_context.detach(token)


def job_attributes(job: Any) -> dict[str, str]:
    """The public ids a job's spans carry (its agent and session are already loaded, as a claim returns them)."""
    ids = {"opie.job.id": job.public_id, "opie.job.kind": str(job.kind),
           "opie.agent.id": job.agent.public_id if job.agent_id else None,
           "opie.session.id": job.session.public_id if job.session_id else None}
    return {key: value for key, value in ids.items() if value}


@contextmanager
def job_trace(job: Any) -> Iterator[None]:
    """The claimed job's run: in its trace, and every `job_span` inside carries its ids
    (so does the Celery task's own span)."""
    attributes = job_attributes(job)
    token = _job_attributes.set(attributes)
    try:
        with in_trace(job.trace_context):
            span = trace.get_current_span()
            if span.is_recording():
                span.set_attributes({**attributes, "opie.job.attempt": job.attempts})
            yield
    finally:
        _job_attributes.reset(token)


def job_span(name: str, **attributes: Any) -> Any:
    """A span of the job's own, current for the block, with the job's ids."""
    return tracer.start_as_current_span(name, attributes={**_job_attributes.get(), **attributes})


def start_job_span(name: str, **attributes: Any) -> Any:
    """A span of the job's own, started now and ended by the caller (not made current)."""
    return tracer.start_span(name, attributes={**_job_attributes.get(), **attributes})


def traced(name: str) -> Callable[[F], F]:
    """Decorate a step of a job's run: each call is one `job_span`."""
    def decorate(function: F) -> F:
        @wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            with job_span(name):
                return function(*args, **kwargs)
        return call  # type: ignore[return-value]
    return decorate


def record_span(name: str, *, traceparent: str, start: datetime, end: datetime, **attributes: Any) -> None:
    """A finished span of the job's trace, child of its stored context, that began before
    this process knew of the job (the queue wait: from accepted to claimed)."""
    ctx = _context(traceparent)
    if ctx is None:
        return
    span = tracer.start_span(name, context=ctx, start_time=_ns(start),
                             attributes={**_job_attributes.get(), **attributes})
    span.end(end_time=max(_ns(end), _ns(start)))


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)
