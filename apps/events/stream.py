"""A job's events as a Server-Sent Events body, for an async view.

Follow the job through the process's hub (apps.events.hub), then replay the
stored events after the client's Last-Event-ID, then follow: a pub/sub nudge
(or the hub's periodic re-check, in case Redis lost it) makes the stream read
the rows after the last `seq` it sent, so nothing is skipped or repeated.
`content.delta` messages (the reply's text so far, published by the worker on
pub/sub only) are relayed as they come, with no `id:` so they leave the
client's Last-Event-ID alone; they are never replayed, and the worker sends
the last one before the job's terminal event commits, so they arrive before
it. The stream ends after the terminal status event, or when it has lived
`AGENTOS_SSE_MAX_SECONDS` (the client reconnects with Last-Event-ID and loses
nothing). While it waits it is a coroutine: no thread, no connection of its own.
"""
from __future__ import annotations

import json
import logging
import time
from typing import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError
from django.http import StreamingHttpResponse

from apps import metrics
from apps.events.hub import Follower, hub
from apps.events.models import JobEvent
from apps.events.pubsub import CONTENT_DELTA
from apps.events.services import TERMINAL_TYPES, job_events_since, job_is_terminal
from apps.jobs.models import Job
from apps.jobs.selectors import job_get_owned

logger = logging.getLogger(__name__)

# rows read per query while replaying a long history
_BATCH = 500
# the reconnection delay a browser's EventSource is told to use, in ms
RETRY_MS = 2000


def max_seconds() -> float:
    return float(settings.AGENTOS_SSE_MAX_SECONDS)


def keepalive_seconds() -> float:
    return float(settings.AGENTOS_SSE_KEEPALIVE_SECONDS)


def sse_event(event: JobEvent) -> str:
    return f"id: {event.seq}\nevent: {event.type}\ndata: {json.dumps(event.data)}\n\n"


def sse_content(text: str) -> str:
    return f"event: {CONTENT_DELTA}\ndata: {json.dumps({'text': text})}\n\n"


def job_for_stream(*, user: AbstractBaseUser, job_id: str, after_seq: int) -> tuple[Job, bool]:
    """The user's job (NotFound otherwise), and whether it has ended with every
    event up to its last already sent (a 204: EventSource stops reconnecting)."""
    job = job_get_owned(user=user, job_id=job_id)
    # status read before the rows: an ended job's rows are all visible by then
    return job, job.is_terminal and not JobEvent.objects.filter(job=job, seq__gt=after_seq).exists()


def event_stream_response(*, job: Job, after_seq: int) -> StreamingHttpResponse:
    """The SSE response following `job` after `after_seq` (the API's and the chat page's)."""
    response = StreamingHttpResponse(job_event_stream(job=job, after_seq=after_seq),
                                     content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _unsent(job: Job, after_seq: int) -> tuple[bool, list[JobEvent]]:
    """Whether the job had ended, then its events after `after_seq` (at most a batch).
    Status before rows: a job seen ended has all its rows visible to this read."""
    return job_is_terminal(public_id=job.public_id), job_events_since(job=job, after_seq=after_seq, limit=_BATCH)


@metrics.open_while("sse")
async def job_event_stream(*, job: Job, after_seq: int) -> AsyncIterator[str]:
    deadline = time.monotonic() + max_seconds()
    last = after_seq
    async with hub().follow(public_id=job.public_id, deltas=True) as follower:
        # sent at once, so the client has the headers before the first event
        yield f"retry: {RETRY_MS}\n\n"
        next_keepalive = time.monotonic() + keepalive_seconds()
        read_now = True
        while True:
            if read_now:
                read_now = False
                try:
                    ended, batch = await sync_to_async(_unsent)(job, last)
                except DatabaseError as exc:
                    logger.warning("job %s: event stream ended early (%s)", job.public_id, exc)
                    return
                for event in batch:
                    yield sse_event(event)
                    last = event.seq
                    if event.type in TERMINAL_TYPES:
                        return
                if len(batch) == _BATCH:  # more to replay
                    read_now = True
                    continue
                if ended:  # ended with no terminal event after `last` (the client already had it)
                    return
            now = time.monotonic()
            if now >= deadline:
                return
            if now >= next_keepalive:
                yield ": keepalive\n\n"
                next_keepalive = now + keepalive_seconds()
            if not await follower.changed(min(deadline, next_keepalive) - now):
                continue
            delta = follower.take_delta()
            if delta is not None:
                yield sse_content(delta)
            read_now = _behind(follower, last)


def _behind(follower: Follower, last: int) -> bool:
    """Whether the hub knows of an event after `last` or of the job's end, or asks to look."""
    return follower.take_poke() or follower.seq > last or follower.ended
