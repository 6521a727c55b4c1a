"""One thread per worker process that keeps its runs' leases alive and relays
cancels to agno.

A running job holds a short lease (AGENTOS_LEASE_SECONDS). While the worker
lives, this thread renews the leases of every run in flight; when the worker
dies they run out and the sweeper gives the jobs to another worker. A cancel
request (or an expiry) found on the way is passed to agno's cooperative
cancellation, which stops the run at its next safe point.

The renewals must never wait behind the runs they protect: when a thousand
runs end at once, their threads queue for the worker's few pooled
connections, and a watcher queued with them would let every lease run out
(the sweeper would then run those jobs again). So the watcher thread has a
connection of its own, outside the pool, kept between ticks and closed when
the thread ends or the connection fails.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from agno.run.cancel import cancel_run, cleanup_run
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connection, connections

from apps.jobs.lifecycle import job_leases_renew
from apps.jobs.models import Job

logger = logging.getLogger(__name__)

T = TypeVar("T")
# how long a finished run keeps trying to write its ending while the database is unreachable
# or every pooled connection is busy (its lease is renewed meanwhile)
ENDING_RETRY_SECONDS = 120.0


class RunWatcher:
    def __init__(self) -> None:
        self._runs: dict[int, tuple[str, str]] = {}  # job pk -> (lease token, agno run id)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def track(self, job: Job) -> Iterator[None]:
        with self._lock:
            self._runs[job.pk] = (job.lease_token, job.public_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="opie-run-watcher", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._runs.pop(job.pk, None)
            # a cancel that raced the run's end must not stay in agno's registry
            cleanup_run(job.public_id)

    def interval(self) -> float:
        return max(0.2, min(1.0, settings.AGENTOS_LEASE_SECONDS / 3))

    def _loop(self) -> None:
        own_connection()
        try:
            while True:
                time.sleep(self.interval())
                with self._lock:
                    runs = dict(self._runs)
                    if not runs:  # nothing in flight: the thread ends, the next run starts another
                        self._thread = None
                        return
                try:
                    for job_id in job_leases_renew(leases=[(pk, token) for pk, (token, _) in runs.items()]):
                        with self._lock:  # a run that has ended since (its own success) is left alone
                            if job_id in self._runs:
                                logger.info("job %s: stop requested; cancelling its run", job_id)
                                cancel_run(runs[job_id][1])
                except Exception:  # the database may be briefly down: try again next tick
                    logger.warning("lease renewal failed", exc_info=True)
                    connection.close()  # a new one next tick
        finally:
            connection.close()


def own_connection() -> None:
    """Give the calling thread a database connection outside the pool (when there is
    one): Django's connections are per thread, so only this thread's changes."""
    pooled = connections[DEFAULT_DB_ALIAS]
    if not pooled.settings_dict["OPTIONS"].get("pool"):
        return  # unpooled: the thread's connection is its own already
    settings_dict = {**pooled.settings_dict,
                     "OPTIONS": {k: v for k, v in pooled.settings_dict["OPTIONS"].items() if k != "pool"}}
    connections[DEFAULT_DB_ALIAS] = type(pooled)(settings_dict, DEFAULT_DB_ALIAS)


watcher = RunWatcher()


def until_written(write: Callable[[], T], *, within: float = ENDING_RETRY_SECONDS) -> T:
    """Call `write` (a run's ending: fenced transactions, safe to repeat) until it gets a
    database connection. When many runs end at once their threads queue for the
    worker's pooled connections, and one that waits longer than DB_POOL_TIMEOUT
    must not throw its finished run away: that would leave the job to run again
    once its lease ran out. The caller keeps the job tracked, so the lease holds."""
    deadline = time.monotonic() + within
    pause = 0.1
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError):
            if time.monotonic() + pause > deadline:
                raise
            logger.warning("could not write the run's ending yet; trying again in %.1f s", pause, exc_info=True)
            connection.close()  # a new (or a pooled) connection next time
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
