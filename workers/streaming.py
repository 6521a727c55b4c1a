"""Run an agno agent streaming, and relay its reply's text live while it grows.

The relay is ephemeral (pub/sub only, `content.delta`, see
apps.events.pubsub.publish_content): no database row per delta, and at most
one publish per AGENTOS_STREAM_INTERVAL_MS while someone listens. Nobody
listens to most runs (API clients poll, wait or take a webhook), so a publish
that reached no one doubles the wait before the next, up to a second: an
unwatched run costs about one publish a second, and a listener that joins
late has its first delta within a second. A reply done within the first
interval publishes nothing at all. The reply itself is still written once, by
the caller, from the final RunOutput.
"""
from __future__ import annotations

import time
from contextlib import closing
from typing import Any

from agno.run.agent import (
    ModelRequestCompletedEvent,
    ModelRequestStartedEvent,
    RunContentEvent,
    RunErrorEvent,
    RunOutput,
)
from agno.run.base import RunStatus
from opentelemetry import context as otel_context
from opentelemetry import trace

from apps.events.pubsub import publish_content
from apps.tracing import start_job_span

# the longest wait between two publishes of a run nobody was listening to
IDLE_INTERVAL = 1.0


class ContentRelay:
    """Coalesces content pieces into `content.delta` publishes of the text so far."""

    def __init__(self, public_id: str, interval_ms: float) -> None:
        self.public_id = public_id
        self.base_interval = interval_ms / 1000
        self.interval = self.base_interval
        self.published = 0  # how many publishes went out
        self._pieces: list[str] = []
        self._length = 0
        self._sent_length = 0
        self._heard = False  # whether the last publish reached a listener
        self._last = time.perf_counter()  # the first publish waits one interval: quick replies send none
        self._broken = False

    def add(self, piece: str) -> None:
        self._pieces.append(piece)
        self._length += len(piece)
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._publish(now)

    def flush(self) -> None:
        """Once the model is done: a listener that saw part of the text sees all of it before the
        terminal event (which carries the reply anyway, for one that joined since)."""
        if self._heard and self._length > self._sent_length:
            self._publish(time.perf_counter())

    def _publish(self, now: float) -> None:
        if self._broken:
            return
        text = "".join(self._pieces)
        self._pieces = [text]
        self._last = now
        listeners = publish_content(public_id=self.public_id, text=text)
        if listeners is None:  # Redis is down: one timeout per job at most; the terminal event has the reply
            self._broken = True
            return
        self._sent_length = len(text)
        self.published += 1
        self._heard = listeners > 0
        self.interval = self.base_interval if self._heard else min(IDLE_INTERVAL, self.interval * 2)


class ModelCallSpans:
    """One span per model call of the run (agno's `ModelRequestStarted`/`Completed` events:
    nothing instruments agno's model calls themselves), current while the call runs so the
    provider's HTTP request is its child. Model, provider and token counts only: no content."""

    def __init__(self) -> None:
        self._span: Any = None
        self._token: Any = None

    def on(self, event: Any) -> None:
        if isinstance(event, ModelRequestStartedEvent):
            self._end()
            self._span = start_job_span(f"chat {event.model}", **{
                "gen_ai.operation.name": "chat", "gen_ai.request.model": event.model or "",
                "gen_ai.system": event.model_provider or ""})
            self._token = otel_context.attach(trace.set_span_in_context(self._span))
        elif self._span is not None:
            usage = {"gen_ai.usage.input_tokens": event.input_tokens, "gen_ai.usage.output_tokens": event.output_tokens}
            self._span.set_attributes({key: value for key, value in usage.items() if value is not None})
            self._end()

    def _end(self) -> None:
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None
        if self._span is not None:
            self._span.end()
            self._span = None

    def __enter__(self) -> ModelCallSpans:
        return self

    def __exit__(self, *_: Any) -> None:
        self._end()  # a run that stopped mid-call


def run_streamed(runner: Any, message: Any, *, relay: ContentRelay, **run_kwargs: Any) -> Any:
    """`runner.run(message, stream=True)` to its end; returns the final RunOutput.

    agno's streamed run yields the RunOutput last (`yield_run_output`), except
    when the run errored: then it ends with a RunErrorEvent, which becomes an
    error RunOutput here, so the caller reads `status` as before. A run that
    paused for a person ends with its paused RunOutput."""
    return _streamed(runner.run(message, stream=True, yield_run_output=True, stream_events=True, **run_kwargs),
                     relay=relay, **run_kwargs)


def continue_streamed(runner: Any, run_response: Any, *, relay: ContentRelay, **run_kwargs: Any) -> Any:
    """`runner.continue_run(run_response, stream=True)` of a paused run, as `run_streamed`."""
    return _streamed(runner.continue_run(run_response=run_response, stream=True, yield_run_output=True,
                                         stream_events=True, **run_kwargs),
                     relay=relay, run_id=run_response.run_id, **run_kwargs)


def _streamed(stream: Any, *, relay: ContentRelay, **run_kwargs: Any) -> Any:
    output: Any = None
    error: Any = None
    with closing(stream) as events, ModelCallSpans() as model_calls:
        for event in events:
            if isinstance(event, RunContentEvent):
                if isinstance(event.content, str) and event.content:
                    relay.add(event.content)
            elif isinstance(event, RunOutput):
                output = event
            elif isinstance(event, RunErrorEvent):
                error = event
            elif isinstance(event, (ModelRequestStartedEvent, ModelRequestCompletedEvent)):
                model_calls.on(event)
    relay.flush()
    if output is None:
        output = RunOutput(run_id=run_kwargs.get("run_id"), session_id=run_kwargs.get("session_id"),
                           status=RunStatus.error,
                           content=(getattr(error, "content", None) or "the model run failed"))
    return output
