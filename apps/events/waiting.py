"""Long-poll: wait for a job to end, as a coroutine (no thread, no connection of its own)."""
from __future__ import annotations

import time

from asgiref.sync import sync_to_async
from django.conf import settings

from apps import metrics
from apps.events.hub import hub
from apps.events.services import job_is_terminal


@metrics.open_while("long_poll")
async def job_wait(*, public_id: str, timeout: float) -> None:
    """Return once the job is terminal or `timeout` seconds pass (at most
    AGENTOS_WAIT_MAX_SECONDS).

    Follows the job first and only then reads its status, so an ending that
    commits in between is still heard; the hub's periodic re-check covers a
    publish Redis lost."""
    deadline = time.monotonic() + max(0.0, min(timeout, settings.AGENTOS_WAIT_MAX_SECONDS))
    async with hub().follow(public_id=public_id) as follower:
        if await sync_to_async(job_is_terminal)(public_id=public_id):
            return
        while not follower.ended and (left := deadline - time.monotonic()) > 0:
            if (await follower.changed(left) and follower.take_poke()
                    and await sync_to_async(job_is_terminal)(public_id=public_id)):
                return
