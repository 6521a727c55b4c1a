"""Long-poll and Server-Sent Events for one job: thin async views over apps.events.

They are coroutines: while a client waits, no thread is held (config/asgi.py).
The database work of each step runs on the web process's threads."""
from __future__ import annotations

from typing import Any, Optional

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from ninja import Query, Router

from apps.api.schemas import ErrorOut, JobOut
from apps.common import DomainError, agentos_enabled_check
from apps.events.stream import event_stream_response, job_for_stream
from apps.events.waiting import job_wait
from apps.jobs.models import Job
from apps.jobs.presenters import job_to_dict
from apps.jobs.selectors import job_get_owned

router = Router(tags=["jobs"])
ERRORS: dict[int, Any] = {code: ErrorOut for code in (400, 401, 404, 503)}
WAIT_MAX_SECONDS = 60.0


def _owned_job(request: HttpRequest, job_id: str) -> Job:
    return job_get_owned(user=request.auth, job_id=job_id)  # type: ignore[attr-defined]


def _last_event_id(request: HttpRequest, query_value: Optional[str]) -> int:
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        raw = query_value or ""
    raw = raw.strip()
    if not raw:
        return 0
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10:  # int() refuses '²', isdigit() does not
        raise DomainError("invalid_input", "Last-Event-ID must be an event id (a whole number of 0 or more).")
    return int(raw)


@router.get("jobs/{job_id}/wait/", response={200: JobOut, **ERRORS}, summary="Wait for a job to end",
            description="Long-poll: answers with the job (the same JSON as `GET jobs/{job_id}/`) as soon as "
                        "it is terminal, or once `timeout` seconds (0 < timeout <= 60, default 30) have "
                        "passed. Both answers are 200: look at `status`, and call again while it is "
                        "`queued` or `running`.")
async def jobs_wait(request: HttpRequest, job_id: str,
                    timeout: float = Query(30, gt=0, le=WAIT_MAX_SECONDS, allow_inf_nan=False)) -> Any:
    agentos_enabled_check()
    if not 0 < timeout <= WAIT_MAX_SECONDS:
        raise DomainError("invalid_input", f"timeout must be more than 0 and at most {WAIT_MAX_SECONDS:g} seconds.")
    job = await sync_to_async(_owned_job_json)(request, job_id)
    if job["status"] not in Job.TERMINAL:
        await job_wait(public_id=job_id, timeout=timeout)
        job = await sync_to_async(_owned_job_json)(request, job_id)
    return job


def _owned_job_json(request: HttpRequest, job_id: str) -> dict[str, Any]:
    return job_to_dict(_owned_job(request, job_id))


# One event as an EventSource client reads it (the schema describes each event, not the stream).
_SSE_EVENT = {"type": "object", "required": ["event", "data"], "properties": {
    "id": {"type": "string", "description": "the event's sequence number; send it back as Last-Event-ID"},
    "event": {"type": "string", "description": "`job.queued`, `job.running`, ..., or `message` for `retry:`"},
    "data": {"type": "string", "description": "the event's JSON payload"},
    "retry": {"type": "integer", "description": "reconnect delay in milliseconds"}}}
_SSE_DOC = {"responses": {
    200: {"description": "`text/event-stream`: one event per row (`id: <seq>`, `event: <type>`, "
                         "`data: <json>`), then the stream follows the job and ends after its terminal event.",
          "content": {"text/event-stream": {"schema": _SSE_EVENT}}},
    204: {"description": "The job has ended and the client has every event (tells EventSource to stop)."}}}


@router.get("jobs/{job_id}/events/", response={**ERRORS}, summary="Stream a job's events (SSE)",
            openapi_extra=_SSE_DOC,
            description="Server-Sent Events. Replays the stored events after `Last-Event-ID` (header, or "
                        "`last_event_id` in the query), then follows the job live: `job.queued`, "
                        "`job.running`, progress events (`tool_call.started`, `tool_call.completed`), "
                        "`content.delta` (live only: `{\"text\": <the reply so far>}`, no `id`, never "
                        "stored or replayed) and one terminal event (`job.succeeded`, `job.failed`, "
                        "`job.cancelled`, `job.expired`), after which the stream closes. A `: keepalive` "
                        "comment comes every 15 s; a stream lasts at most AGENTOS_SSE_MAX_SECONDS, then the "
                        "client reconnects with Last-Event-ID and misses nothing.")
async def jobs_events(request: HttpRequest, job_id: str, last_event_id: Optional[str] = None) -> Any:
    agentos_enabled_check()
    after = _last_event_id(request, last_event_id)
    job, told_all = await sync_to_async(job_for_stream)(user=request.auth, job_id=job_id,  # type: ignore[attr-defined]
                                                        after_seq=after)
    return HttpResponse(status=204) if told_all else event_stream_response(job=job, after_seq=after)
