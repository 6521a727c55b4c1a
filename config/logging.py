"""Structured logs: a per-job context on every line, plain or one JSON object per line.

`log_context(job_id=..., agent_id=..., session_id=...)` marks everything logged
inside the block, in this thread, with those ids. The values live in a
ContextVar: Celery's threads pool runs each task in a pool thread, so a value
set for one job must be undone when the job ends, or the next task on that
thread would inherit it. The block resets it with the token from `set()`.
"""
from __future__ import annotations

import contextvars
import json
import logging
import logging.config
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

# never mutated: log_context sets a new dict each time
_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("opie_log_context", default={})  # noqa: B039

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "log_context", "taskName"}
# The plain format writes these first and short: `job=job-… agent=agent-… session=sess-…`.
_LEADING = ("job_id", "agent_id", "session_id")
# Chatty libraries that say nothing useful about our jobs at DEBUG.
_NOISY_AT_DEBUG = ("asyncio", "httpcore", "urllib3", "multipart", "django.template", "django.utils.autoreload")


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add fields to every log record made in this block (None values are left out)."""
    token = _context.set({**_context.get(), **{key: value for key, value in fields.items() if value is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current_log_context() -> dict[str, Any]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Copies the current log context onto the record, so any formatter or handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "log_context"):
            record.log_context = current_log_context()
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    context = getattr(record, "log_context", None)
    return dict(context) if context is not None else current_log_context()


class PlainFormatter(logging.Formatter):
    """`<time> <LEVEL> <logger> <message> job=… agent=… session=…`, traceback below."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = _fields(record)
        if not fields:
            return line
        ordered = [key for key in _LEADING if key in fields] + [key for key in fields if key not in _LEADING]
        return line + " " + " ".join(f"{key.removesuffix('_id')}={fields[key]}" for key in ordered)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, context, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, tz=timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(config: dict[str, Any]) -> None:
    """Apply LOGGING (Django's LOGGING_CONFIG, and Celery's processes before they start
    working); Python warnings become log records too, so JSON output stays JSON."""
    logging.config.dictConfig(config)
    logging.captureWarnings(True)


def logging_config(*, log_format: str, level: str, agno_level: str) -> dict[str, Any]:
    """Django's LOGGING: one console handler on the root logger, in the chosen format."""
    if log_format not in ("plain", "json"):
        raise ValueError(f"LOG_FORMAT={log_format!r}: use plain or json")
    loggers: dict[str, Any] = {
        # agno resets its own logger's level on every run; it logs through this one of ours
        "opie.agno": {"level": agno_level},
    }
    if logging.getLevelName(level.upper()) == logging.DEBUG:
        loggers.update({name: {"level": "INFO"} for name in _NOISY_AT_DEBUG})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "config.logging.ContextFilter"}},
        "formatters": {
            "plain": {"()": "config.logging.PlainFormatter",
                      "format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
            "json": {"()": "config.logging.JsonFormatter"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": log_format,
                                 "filters": ["context"]}},
        "root": {"handlers": ["console"], "level": level.upper()},
        "loggers": loggers,
    }
