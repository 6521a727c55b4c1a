"""A job's events as a Server-Sent Events body.

Subscribe, then replay the stored events after the client's Last-Event-ID,
then follow: a pub/sub message (or a periodic re-check, in case Redis lost
it) makes the stream read the rows after the last `seq` it sent, so nothing
is skipped or repeated. `content.delta` messages (the reply's text so far,
published by the worker on pub/sub only) are relayed as they come, with no
`id:` so they leave the client's Last-Event-ID alone; they are never
replayed, and the worker sends the last one before the job's terminal event
commits, so they arrive before it. The stream ends after the terminal status event, or
when it has lived `AGENTOS_SSE_MAX_SECONDS` (the client reconnects with
Last-Event-ID and loses nothing).
"""
from __future__ import annotations

import json
import logging
import time
from typing import Iterator

from django.conf import settings
from django.db import DatabaseError

from apps.events.models import JobEvent
from apps.events.pubsub import CONTENT_DELTA, Subscription
from apps.events.services import TERMINAL_TYPES, job_events_since, job_is_terminal, recheck_seconds
from apps.jobs.models import Job

logger = logging.getLogger(__name__)

# rows read per query while replaying a long history
_BATCH = 500
# the reconnection delay a browser's EventSource is told to use, in ms
RETRY_MS = 2000


def max_seconds() -> float:
    return float(getattr(settings, "AGENTOS_SSE_MAX_SECONDS", 300))


def keepalive_seconds() -> float:
    return float(getattr(settings, "AGENTOS_SSE_KEEPALIVE_SECONDS", 15))


def sse_event(event: JobEvent) -> str:
    return f"id: {event.seq}\nevent: {event.type}\ndata: {json.dumps(event.data)}\n\n"


def sse_content(text: str) -> str:
    return f"event: {CONTENT_DELTA}\ndata: {json.dumps({'text': text})}\n\n"


def job_event_stream(*, job: Job, after_seq: int) -> Iterator[str]:
    deadline = time.monotonic() + max_seconds()
    last = after_seq
    with Subscription(job.public_id) as subscription:
        # sent at once, so the client has the headers before the first event
        yield f"retry: {RETRY_MS}\n\n"
        next_keepalive = time.monotonic() + keepalive_seconds()
        read_now = True
        while True:
            if read_now:
                try:
                    # status before rows: a job seen ended has all its rows visible to the next read
                    ended = job_is_terminal(job_id=job.pk)
                    while True:
                        batch = job_events_since(job=job, after_seq=last, limit=_BATCH)
                        for event in batch:
                            yield sse_event(event)
                            last = event.seq
                            if event.type in TERMINAL_TYPES:
                                return
                        if len(batch) < _BATCH:
                            break
                except DatabaseError as exc:
                    logger.warning("job %s: event stream ended early (%s)", job.public_id, exc)
                    return
                if ended:  # ended with no terminal event after `last` (the client already had it)
                    return
                next_check = time.monotonic() + recheck_seconds()
                read_now = False
            now = time.monotonic()
            if now >= deadline:
                return
            if now >= next_keepalive:
                yield ": keepalive\n\n"
                next_keepalive = now + keepalive_seconds()
            if now >= next_check:
                read_now = True
                continue
            message = subscription.wait(min(deadline, next_keepalive, next_check) - now)
            if message is None:
                continue
            if message.get("type") == CONTENT_DELTA and isinstance(message.get("text"), str):
                yield sse_content(message["text"])
            elif isinstance(message.get("seq"), int) and message["seq"] > last:
                read_now = True
