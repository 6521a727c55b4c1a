"""agno's in-process run cancellation, with something to wait on.

agno's cancellation is cooperative: a run checks `is_cancelled(run_id)` at its
safe points. The built-in `local` model simulates a slow provider by waiting
`latency_ms`, and must stop waiting when its run is cancelled; polling that
check every few milliseconds, as a thousand runs in flight would, costs a
core of the worker for nothing (a real provider call waits on its socket and
costs none). This manager keeps agno's in-memory registry and adds an Event per
waited-on run, set by `cancel_run`, so a waiting model sleeps until its time is
up or its run is cancelled.
"""
from __future__ import annotations

import logging
import threading
import time

from agno.run import cancel
from agno.run.cancel import cancellation_manager_explicitly_set, get_cancellation_manager, set_cancellation_manager
from agno.run.cancellation_management.in_memory_cancellation_manager import InMemoryRunCancellationManager


class WaitableCancellationManager(InMemoryRunCancellationManager):
    def __init__(self) -> None:
        super().__init__()
        self._events: dict[str, threading.Event] = {}
        self._events_lock = threading.Lock()

    def _event(self, run_id: str) -> threading.Event:
        with self._events_lock:
            return self._events.setdefault(run_id, threading.Event())

    def cancel_run(self, run_id: str) -> bool:
        registered = super().cancel_run(run_id)
        self._event(run_id).set()
        return registered

    def cleanup_run(self, run_id: str) -> None:
        super().cleanup_run(run_id)
        with self._events_lock:
            self._events.pop(run_id, None)

    def wait_cancelled(self, run_id: str, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True as soon as the run is cancelled."""
        event = self._event(run_id)
        return self.is_cancelled(run_id) or event.wait(timeout)


def install() -> None:
    """Use it in this process, unless something chose another manager (a Redis one, say)."""
    if cancellation_manager_explicitly_set():
        return
    # agno announces the change at INFO on the logger it bound at import, whose handler prints
    # plain text to stdout (a JSON-logging worker must write JSON only): keep that line out
    announcer = cancel.logger
    level = announcer.level
    announcer.setLevel(logging.WARNING)
    try:
        set_cancellation_manager(WaitableCancellationManager())
    finally:
        announcer.setLevel(level)


def wait_cancelled(run_id: str, timeout: float) -> bool:
    """Wait for `run_id` to be cancelled, up to `timeout` seconds; whether it was."""
    manager = get_cancellation_manager()
    if isinstance(manager, WaitableCancellationManager):
        return manager.wait_cancelled(run_id, timeout)
    deadline = time.monotonic() + timeout
    while not manager.is_cancelled(run_id):  # another manager: look every 50 ms
        if (left := deadline - time.monotonic()) <= 0:
            return False
        time.sleep(min(left, 0.05))
    return True
