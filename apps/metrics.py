"""Prometheus metrics, shared by every process of a deployment (`GET /metrics` in the web).

prometheus_client's multiprocess mode: each process (web processes, Celery workers and
their threads, beat) writes its samples to memory-mapped files in one directory,
OPIE_METRICS_DIR, and the web reads them all at scrape time (apps.opie.health), so one
scrape target shows the whole system however many processes of each kind run. Counters
and histograms of a process that ended are kept (totals never go back); the open-streams
gauge is `livesum`, so a web process that ended stops counting (its file is removed at its
shutdown, or at the next scrape when it was killed: `prune_dead`). What is in PostgreSQL
(queue depth, oldest queued job, oldest undelivered webhook) is read at scrape time there
instead of counted here.

A file is named by its process: `<host>-<pid>`, not the pid alone, because in Compose each
container numbers its processes from 1 and they share the directory on a volume.

Labels are bounded sets: kinds, statuses, outcomes, providers, model ids, tool names (the
registry's). Never message text, user names or ids.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import inspect
import os
import socket
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable, Iterator

from django.conf import settings
from django.db import transaction

METRICS_DIR = Path(settings.OPIE_METRICS_DIR)
METRICS_DIR.mkdir(parents=True, exist_ok=True)
# prometheus_client reads it when a process opens its files; set before the first metric below
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)

from prometheus_client import Counter, Gauge, Histogram, multiprocess, values  # noqa: E402

_HOST = socket.gethostname().replace("_", "-")  # `_` separates the parts of a file's name


def process_id() -> str:
    """This process's name in the file names; re-read on every write, so a forked child gets its own."""
    return f"{_HOST}-{os.getpid()}"


def _multiprocess() -> None:
    """Every metric value from now on lives in the shared directory. Set here rather than by
    the environment alone, so that it holds even when a library imported prometheus_client
    before the settings were read, and with `process_id` as the process's name."""
    values.ValueClass = values.MultiProcessValue(process_identifier=process_id)


def process_local() -> None:
    """Metrics created from now on stay in this process (Flower's own, on Flower's /metrics)."""
    values.ValueClass = values.MutexValue


_multiprocess()

_P = "opie_"
# seconds: from a few milliseconds (a claim, a local model) to a long agent run
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)

JOBS_ACCEPTED = Counter(f"{_P}jobs_accepted_total", "Jobs accepted (written and committed), by kind.", ["kind"])
JOBS_ENDED = Counter(f"{_P}jobs_ended_total", "Jobs that reached a terminal status, by kind and status.",
                     ["kind", "status"])
JOB_QUEUE_WAIT = Histogram(f"{_P}job_queue_wait_seconds", "From acceptance to a job's first claim by a worker.",
                           ["kind"], buckets=_SECONDS)
JOB_RUN = Histogram(f"{_P}job_run_seconds", "From the claim of a job's last attempt to its ending.", ["kind"],
                    buckets=_SECONDS)
MODEL_CALL = Histogram(f"{_P}model_call_seconds", "One model call (one assistant message of a run).",
                       ["provider", "model"], buckets=_SECONDS)
MODEL_TOKENS = Counter(f"{_P}model_tokens_total", "Tokens of model calls, by direction (input, output).",
                       ["provider", "model", "direction"])
TOOL_CALLS = Counter(f"{_P}tool_calls_total", "Tool calls of agent runs, by tool and outcome (ok, error).",
                     ["tool", "outcome"])
WEBHOOK_ATTEMPTS = Counter(f"{_P}webhook_attempts_total",
                           "Webhook delivery attempts, by outcome (delivered, retrying, failed).", ["outcome"])
POOL_HITS = Counter(f"{_P}pool_hits_total", "Warm-pool lookups that found the agent built.")
POOL_MISSES = Counter(f"{_P}pool_misses_total", "Warm-pool lookups that had to build the agent.")
POOL_BUILDS = Counter(f"{_P}pool_builds_total", "Agents built by the warm pools.")
OPEN_STREAMS = Gauge(f"{_P}open_streams", "Clients following a job now, by kind (sse, long_poll).", ["kind"],
                     multiprocess_mode="livesum")
SWEEPER_REQUEUES = Counter(f"{_P}sweeper_requeues_total",
                           "Jobs the sweeper sent again, by reason (lost_message, lease_expired).", ["reason"])
SCHEDULE_FIRINGS = Counter(f"{_P}schedule_firings_total",
                           "User schedules' firings, by outcome (fired, skipped, failed, paused, duplicate).",
                           ["outcome"])

# every value of the small fixed label sets exists from the start, at 0: a rate over them
# works before the first event, and a dashboard's series are there
for _outcome in ("delivered", "retrying", "failed"):
    WEBHOOK_ATTEMPTS.labels(_outcome)
for _reason in ("lost_message", "lease_expired"):
    SWEEPER_REQUEUES.labels(_reason)
for _kind in ("sse", "long_poll"):
    OPEN_STREAMS.labels(_kind)
for _outcome in ("fired", "skipped", "failed", "paused", "duplicate"):
    SCHEDULE_FIRINGS.labels(_outcome)

_LABEL_MAX = 100


def _label(value: Any) -> str:
    return str(value or "unknown")[:_LABEL_MAX]


def _after_commit(count: Callable[[], None]) -> None:
    """Count once the transaction commits (now, outside one): a rolled-back write counts nothing."""
    transaction.on_commit(count)


def job_accepted(*, job: Any) -> None:
    kind = _label(job.kind)
    _after_commit(lambda: JOBS_ACCEPTED.labels(kind).inc())


def job_claimed(*, job: Any) -> None:
    """A job's queue wait, at its first claim only: a later attempt's or a resumed pause's
    wait would count the earlier run and the pause as waiting."""
    if job.attempts != 1 or job.pauses or job.started_at is None:
        return
    kind, wait = _label(job.kind), (job.started_at - job.created_at).total_seconds()
    _after_commit(lambda: JOB_QUEUE_WAIT.labels(kind).observe(max(wait, 0.0)))


def job_ended(*, job: Any) -> None:
    """Called inside the transaction of every ending (apps.jobs.lifecycle.job_ended_effects)."""
    kind, status = _label(job.kind), _label(job.status)
    run = (job.finished_at - job.started_at).total_seconds() if job.started_at and job.finished_at else None

    def count() -> None:
        JOBS_ENDED.labels(kind, status).inc()
        if run is not None:
            JOB_RUN.labels(kind).observe(max(run, 0.0))
    _after_commit(count)


def model_calls_timed(model: Any) -> Any:
    """Time every call `model` makes to its provider (agno's invoke, invoke_stream and their
    async twins: one request each, a streamed one until its last chunk), by provider and model.
    agno records no per-call duration on a streamed run's messages, so it is measured here."""
    timer = MODEL_CALL.labels(_label(getattr(model, "provider", None)), _label(getattr(model, "id", None)))
    for name in ("invoke", "invoke_stream", "ainvoke", "ainvoke_stream"):
        call = getattr(model, name, None)
        if call is not None:
            setattr(model, name, _timed(call, timer))
    return model


def _timed(call: Callable[..., Any], timer: Any) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(call):
        @functools.wraps(call)
        async def astream(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            with timer.time():
                async with contextlib.aclosing(call(*args, **kwargs)) as inner:
                    async for item in inner:
                        yield item
        return astream
    if inspect.iscoroutinefunction(call):
        @functools.wraps(call)
        async def acall(*args: Any, **kwargs: Any) -> Any:
            with timer.time():
                return await call(*args, **kwargs)
        return acall
    if inspect.isgeneratorfunction(call):
        @functools.wraps(call)
        def stream(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with timer.time(), contextlib.closing(call(*args, **kwargs)) as inner:
                yield from inner
        return stream

    @functools.wraps(call)
    def plain(*args: Any, **kwargs: Any) -> Any:
        with timer.time():
            return call(*args, **kwargs)
    return plain


def model_calls(output: Any, *, before: Any = None) -> None:
    """The tokens of one agno run's model calls: each assistant message it added (`before`:
    the stored run a continued one started from, whose calls were counted then); a run with
    no such message counts its run totals. Their latency is timed at the call (model_calls_timed)."""
    provider, model = _label(getattr(output, "model_provider", None)), _label(getattr(output, "model", None))
    seen = {getattr(m, "id", None) for m in getattr(before, "messages", None) or []} - {None}
    calls = [m for m in getattr(output, "messages", None) or []
             if m.role == "assistant" and not getattr(m, "from_history", False) and getattr(m, "id", None) not in seen]
    for metrics in [m.metrics for m in calls] or [getattr(output, "metrics", None)]:
        if metrics is None:
            continue
        MODEL_TOKENS.labels(provider, model, "input").inc(getattr(metrics, "input_tokens", 0) or 0)
        MODEL_TOKENS.labels(provider, model, "output").inc(getattr(metrics, "output_tokens", 0) or 0)


def tool_counted(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
    """`call`, counting each run of it under the tool's name: ok, or error when it raises."""
    tool = _label(name)

    @functools.wraps(call)
    def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            result = call(*args, **kwargs)
        except BaseException:
            TOOL_CALLS.labels(tool, "error").inc()
            raise
        TOOL_CALLS.labels(tool, "ok").inc()
        return result
    return counted


def webhook_attempt(*, outcome: str) -> None:
    WEBHOOK_ATTEMPTS.labels(_label(outcome)).inc()


def sweeper_requeued(*, reason: str, count: int) -> None:
    if count:
        SWEEPER_REQUEUES.labels(reason).inc(count)


def schedule_fired(*, outcome: str, count: int = 1) -> None:
    """Schedules' firings (apps.schedules), counted once their transaction commits."""
    if count:
        _after_commit(lambda: SCHEDULE_FIRINGS.labels(_label(outcome)).inc(count))


def open_while(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Count a client following a job (`kind`: sse, long_poll) while the decorated coroutine
    or async generator runs, in this web process's live gauge."""
    gauge = OPEN_STREAMS.labels(kind)

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(fn):
            @functools.wraps(fn)
            async def stream(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                with gauge.track_inprogress():
                    async with contextlib.aclosing(fn(*args, **kwargs)) as inner:
                        async for item in inner:
                            yield item
            return stream

        @functools.wraps(fn)
        async def waiting(*args: Any, **kwargs: Any) -> Any:
            with gauge.track_inprogress():
                return await fn(*args, **kwargs)
        return waiting
    return wrap


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _live_files() -> Iterable[str]:
    return glob.glob(str(METRICS_DIR / "gauge_live*_*.db"))


def prune_dead() -> None:
    """Forget the live gauges of this host's processes that ended without saying so (killed):
    their open streams closed with them. Another host's processes cannot be checked from here."""
    for path in _live_files():
        ident = Path(path).stem.rsplit("_", 1)[-1]
        host, _, pid = ident.rpartition("-")
        if host == _HOST and pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(ident, str(METRICS_DIR))


def process_exit() -> None:
    """This process stops: its live gauges stop counting (its counters stay)."""
    multiprocess.mark_process_dead(process_id(), str(METRICS_DIR))


def reset() -> int:
    """Empty the directory, once, when a deployment starts (before any of its processes):
    returns how many files went. Never while processes run: their writes would be lost."""
    files = glob.glob(str(METRICS_DIR / "*.db"))
    for path in files:
        os.remove(path)
    return len(files)
