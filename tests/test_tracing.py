"""One trace per job (apps.tracing): the accepting request's span, then the queue wait,
the claim, history, each model call and tool call, the reply write and the webhook
attempt, across the web process (this one: the SDK's in-memory exporter) and a real
worker process (exporting over OTLP/HTTP to a receiver on 127.0.0.1)."""
from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from apps import tracing
from tests.conftest import AsgiLiveServer, wait_for_job
from tests.factories import make_agent
from tests.webhook_receiver import Receiver

MESSAGE = "/tool calculator 2+2"
REPLY = "calculator returned: 4"


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    attributes: dict[str, Any] = field(default_factory=dict)
    process: str = ""
    kind: str = ""


class OtlpReceiver:
    """A small OTLP/HTTP trace receiver: POST /v1/traces with a protobuf ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._add(request, self.path)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.paths: list[str] = []
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _add(self, request: ExportTraceServiceRequest, path: str) -> None:
        with self._lock:
            self.paths.append(path)
            for resource_spans in request.resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes
                                if a.key == "service.name"), "")
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        self.spans.append(Span(
                            s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex() or None,
                            {a.key: _any_value(a.value) for a in s.attributes}, service))

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _from_sdk(span: Any) -> Span:
    parent = span.parent.span_id if span.parent is not None else None
    return Span(span.name, format(span.context.trace_id, "032x"), format(span.context.span_id, "016x"),
                format(parent, "016x") if parent else None, dict(span.attributes or {}), "web", span.kind.name)


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """This process traces into memory while the module runs (the web side of every test)."""
    memory = InMemorySpanExporter()
    assert tracing.configure_tracing("opie-test", exporter=memory)
    yield memory
    tracing.uninstrument()


@pytest.fixture
def traced_http(exporter: InMemorySpanExporter, token: str) -> Iterator[httpx.Client]:
    """Like the `http` fixture, against an ASGI handler built after Django was instrumented
    (the session's live server loaded its middleware before)."""
    import config.asgi

    exporter.clear()
    shared = config.asgi.application
    config.asgi.application = config.asgi.OpieASGIHandler()
    try:
        # no lifespan: its shutdown would tell the metrics this process stopped serving
        # (apps.metrics.process_exit), while the session's own live server still serves
        server = AsgiLiveServer(lifespan="off")
    finally:
        config.asgi.application = shared
    try:
        with httpx.Client(base_url=f"{server.url}/api/v1/agentos/", headers={"Authorization": f"Bearer {token}"},
                          timeout=30) as client:
            yield client
    finally:
        server.stop()


def _ancestry(span: Span, by_id: dict[str, Span]) -> list[str]:
    chain = []
    while span.parent_id is not None and span.parent_id in by_id:
        span = by_id[span.parent_id]
        chain.append(span.span_id)
    return chain


def test_one_job_is_one_trace_from_the_request_across_the_worker_to_the_webhook(
        traced_http, exporter, start_worker, user, settings):
    settings.AGENTOS_WEBHOOK_ALLOW_PRIVATE = True
    otlp = OtlpReceiver()
    try:
        worker = start_worker(OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url, OTEL_BSP_SCHEDULE_DELAY="100",
                              AGENTOS_WEBHOOK_ALLOW_PRIVATE="1")
        agent = make_agent(user, tools=["calculator"])
        with Receiver([200]) as hook:
            accepted = traced_http.post("send-message/", json={
                "agent_id": agent.public_id, "message": MESSAGE, "callback_url": f"{hook.url}/hook"})
            assert accepted.status_code == 202, accepted.text
            job = wait_for_job(traced_http, accepted.json()["job_id"])
            assert job["status"] == "succeeded" and job["result"]["content"] == REPLY
            trace_id = job["trace_id"]
            assert trace_id and len(trace_id) == 32
            names = lambda: {s.name for s in otlp.spans}  # noqa: E731
            deadline = time.monotonic() + 20
            while not {"webhook.attempt", "job.reply_write"} <= names() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)  # the POST's span ends just after the attempt's own
        web = [_from_sdk(s) for s in exporter.get_finished_spans()]
        spans = web + list(otlp.spans)
    finally:
        otlp.stop()

    assert otlp.paths and set(otlp.paths) == {"/v1/traces"}
    in_job = [s for s in spans if s.trace_id == trace_id]
    by_id = {s.span_id: s for s in in_job}
    # the accepting request's span (its parent is this test's httpx client span: the trace starts there)
    request = next(s for s in web if s.trace_id == trace_id and s.kind == "SERVER")
    assert request.name == "POST api/v1/agentos/send-message/", request

    def one(name: str) -> Span:
        found = [s for s in in_job if s.name == name]
        assert found, f"no {name} span in the job's trace; worker spans: {sorted({s.name for s in otlp.spans})}"
        return found[0]

    wait = one("job.queue_wait")
    assert wait.parent_id == request.span_id and wait.process == "opie-worker"
    steps = [one("job.claim"), one("job.history"), one("job.reply_write"), one("webhook.attempt"),
             one("execute_tool calculator")]
    models = [s for s in in_job if s.name.startswith("chat ")]
    assert len(models) >= 2, "the tool call needs a model call before it and one after"
    for span in steps + models:
        assert span.process == "opie-worker", span
        assert request.span_id in _ancestry(span, by_id), f"{span.name} is not under the request's span"
    # the POST to the receiver is httpx's span, under the attempt's
    post = [s for s in in_job if s.attributes.get("http.request.method", s.attributes.get("http.method")) == "POST"
            and s.process == "opie-worker"]
    assert any(one("webhook.attempt").span_id in _ancestry(s, by_id) or s.parent_id == one("webhook.attempt").span_id
               for s in post)
    # the job's SQL is psycopg's spans, in the same trace
    assert any(s.attributes.get("db.system") == "postgresql" or s.attributes.get("db.system.name") == "postgresql"
               for s in in_job if s.process == "opie-worker")
    # every span of the worker's run is in the job's trace
    job_spans = [s for s in otlp.spans if s.attributes.get("opie.job.id") == job["job_id"]]
    assert {s.trace_id for s in job_spans} == {trace_id}
    for span in (one("job.claim"), one("job.history"), models[0]):
        assert span.attributes["opie.job.id"] == job["job_id"]
        assert span.attributes["opie.agent.id"] == agent.public_id
        assert span.attributes["opie.session.id"] == job["session_id"]

    # no span says what was written, nor what came back
    for span in spans:
        for value in span.attributes.values():
            assert MESSAGE not in str(value) and REPLY not in str(value) and "2+2" not in str(value), (span.name,
                                                                                                       value)

    # every log line of the job carries its trace id
    lines = [line for line in worker.log.read_text().splitlines() if f"job={job['job_id']}" in line]
    assert len(lines) >= 2
    assert all(f"trace={trace_id}" in line for line in lines), lines


def test_a_sweeper_resend_is_published_in_the_jobs_trace(transactional_db, traced_http, exporter, user):
    from celery.signals import before_task_publish
    from django.utils import timezone

    from apps.jobs.models import Job
    from apps.jobs.sweeper import jobs_sweep

    agent = make_agent(user)
    job_id = traced_http.post("send-message/", json={"agent_id": agent.public_id, "message": "hello"}).json()["job_id"]
    trace_id = traced_http.get(f"jobs/{job_id}/").json()["trace_id"]
    assert trace_id
    # its message was lost: published long ago, and no worker took it
    Job.objects.filter(public_id=job_id).update(enqueued_at=timezone.now() - timezone.timedelta(hours=1))
    headers: list[dict[str, Any]] = []

    def record(**kwargs: Any) -> None:
        headers.append(dict(kwargs.get("headers") or {}))

    before_task_publish.connect(record, weak=False)
    try:
        exporter.clear()
        with tracing.tracer.start_as_current_span("sweep"):  # the sweeper's own task has a trace of its own
            assert jobs_sweep()["resent"] == 1
    finally:
        before_task_publish.disconnect(record)
        from celery import current_app

        with current_app.connection_for_write() as conn:  # no worker takes them here: leave none for later tests
            conn.default_channel.queue_purge("agents")

    assert headers and headers[-1]["traceparent"].split("-")[1] == trace_id
    published = [_from_sdk(s) for s in exporter.get_finished_spans() if s.name.startswith("apply_async/")]
    assert [s.trace_id for s in published] == [trace_id]


def test_tracing_is_off_unless_an_otlp_endpoint_is_set(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert not tracing.tracing_requested()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert tracing.tracing_requested()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.tracing_requested()
    assert tracing.trace_id("") is None
    assert tracing.trace_id("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") == (
        "0af7651916cd43dd8448eb211c80319c")
