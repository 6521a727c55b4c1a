"""One thread per worker process that keeps its runs' leases alive and relays
cancels to agno.

A running job holds a short lease (AGENTOS_LEASE_SECONDS). While the worker
lives, this thread renews the leases of every run in flight; when the worker
dies they run out and the sweeper gives the jobs to another worker. A cancel
request (or an expiry) found on the way is passed to agno's cooperative
cancellation, which stops the run at its next safe point.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from agno.run.cancel import cancel_run, cleanup_run
from django.conf import settings
from django.db import connection

from apps.jobs.lifecycle import job_leases_renew
from apps.jobs.models import Job

logger = logging.getLogger(__name__)


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
            finally:
                connection.close()  # this thread's own connection; never held between ticks


watcher = RunWatcher()
