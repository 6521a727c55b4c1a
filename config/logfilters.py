"""Logging filters referenced from settings.LOGGING (no Django imports: loaded while logging is configured)."""
from __future__ import annotations

import logging
import threading
import time


class CacheOutageFilter(logging.Filter):
    """django-redis logs every Redis error it ignored at ERROR with a traceback.

    An unreachable cache is a degraded mode, not a failure (the database answers),
    and during an outage every request would log one. This turns each record into
    a one-line WARNING naming the cause, and lets one through per `interval` seconds
    per process, with the count of those it held back."""

    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        self.interval = interval
        self._next = 0.0
        self._held = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._held += 1
                return False
            held, self._held, self._next = self._held, 0, now + self.interval
        exc = record.exc_info[1] if record.exc_info else None
        cause = (exc.__cause__ or exc) if exc is not None else None
        reason = f"{cause.__class__.__name__}: {cause}" if cause is not None else record.getMessage()
        record.msg = "Redis cache unreachable, reading the database instead (%s)%s"
        record.args = (reason, f"; {held} more errors in the last {self.interval:.0f} s" if held else "")
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True
