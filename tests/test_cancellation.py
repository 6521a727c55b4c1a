"""A run's simulated model latency ends the moment the run is cancelled, without polling."""
from __future__ import annotations

import threading
import time
from typing import Iterator

import pytest
from agno.run import cancel

from apps.agents.cancellation import WaitableCancellationManager, wait_cancelled


@pytest.fixture
def manager() -> Iterator[WaitableCancellationManager]:
    before = cancel.get_cancellation_manager()
    installed = WaitableCancellationManager()
    cancel.set_cancellation_manager(installed)
    yield installed
    cancel.set_cancellation_manager(before)


def test_a_wait_ends_as_soon_as_agno_cancels_the_run(manager):
    cancel.register_run("run-1")
    threading.Timer(0.2, cancel.cancel_run, args=["run-1"]).start()

    started = time.monotonic()
    cancelled = wait_cancelled("run-1", 5)

    assert cancelled is True
    assert 0.15 < time.monotonic() - started < 1


def test_a_wait_that_nobody_cancels_lasts_its_time_and_says_so(manager):
    cancel.register_run("run-2")

    started = time.monotonic()
    cancelled = wait_cancelled("run-2", 0.3)

    assert cancelled is False
    assert 0.29 < time.monotonic() - started < 1


def test_a_run_cancelled_before_its_wait_does_not_wait(manager):
    cancel.register_run("run-3")
    cancel.cancel_run("run-3")

    started = time.monotonic()
    assert wait_cancelled("run-3", 5) is True
    assert time.monotonic() - started < 0.1


def test_a_finished_run_leaves_nothing_behind(manager):
    cancel.register_run("run-4")
    wait_cancelled("run-4", 0.01)

    cancel.cleanup_run("run-4")

    assert "run-4" not in manager._events
