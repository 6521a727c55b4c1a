"""Webhook delivery: worker CPU per attempt, a new HTTP client per attempt vs the shared one.

Each attempt is `webhook_deliver` as the `webhooks` task runs it (claim,
sign, POST, record the attempt) to a receiver in another process on
127.0.0.1 that answers 200 over HTTP/1.1 keep-alive, as real receivers do.
The figure is this process's CPU time (user + system) around N sequential
attempts, divided by N: what a worker spends, not PostgreSQL or the
receiver. "New client per attempt" is `httpx.post()`, which builds a client
and with it a TLS context that loads the CA bundle, then connects afresh;
"shared" is the process's pooled client (apps/webhooks/client.py).

The receiver is local, so private addresses are allowed for the run: the
SSRF check skips its DNS lookup (a public name would add one getaddrinfo).

`python -m bench.webhooks [--quick]` runs it alone against the bench's own
embedded PostgreSQL and Redis under var/bench; `python -m bench` can call
`scenario_webhooks` with its context.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent


def receive() -> None:
    """The receiver process: prints its port, then answers every POST with 200."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


@contextmanager
def receiver() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.webhooks", "receive"], cwd=ROOT,
                            stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None
        yield f"http://127.0.0.1:{int(proc.stdout.readline())}/hook"
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def private_allowed() -> Iterator[None]:
    """The dev flag, for the local receiver only; the settings are as they were afterwards."""
    from django.test.utils import override_settings

    with override_settings(AGENTOS_WEBHOOK_ALLOW_PRIVATE=True):
        yield


class _ClientPerAttempt:
    """What an attempt did before the shared client: `httpx.post()`, a new client each time."""

    def post(self, url: str, **kwargs: Any) -> Any:
        import httpx

        return httpx.post(url, **kwargs)


@contextmanager
def client_per_attempt() -> Iterator[None]:
    from apps.webhooks import services

    shared = services.webhook_http_client
    services.webhook_http_client = lambda *, timeout: _ClientPerAttempt()  # type: ignore[assignment]
    try:
        yield
    finally:
        services.webhook_http_client = shared


def _finished_job(user: Any) -> tuple[Any, dict[str, Any]]:
    """A succeeded job and its event, as a finished agent run leaves them (nothing is enqueued)."""
    from django.utils import timezone

    from apps.jobs.models import Job
    from apps.jobs.presenters import job_to_dict

    now = timezone.now()
    job = Job.objects.create(owner=user, status=Job.Status.SUCCEEDED, input={"message": "notify me"},
                             result={"content": "Echo #1: notify me " + "lorem ipsum " * 40,
                                     "metrics": {"input_tokens": 12, "output_tokens": 96, "duration_ms": 3.2}},
                             attempts=1, started_at=now, finished_at=now)
    return job, {"type": "job.succeeded", "timestamp": now.isoformat(), "data": job_to_dict(job)}


def attempts(job: Any, event: dict[str, Any], url: str, count: int) -> dict[str, float]:
    """CPU and wall time per attempt over `count` deliveries, each delivered on its first attempt."""
    from django.utils import timezone

    from apps.webhooks.models import WebhookDelivery
    from apps.webhooks.services import webhook_deliver

    rows = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(job=job, owner_id=job.owner_id, event_type=event["type"], url=url, payload=event,
                        next_attempt_at=timezone.now()) for _ in range(count))
    cpu, wall = time.process_time(), time.perf_counter()
    outcomes = [webhook_deliver(delivery_id=row.pk) for row in rows]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if set(outcomes) != {"delivered"}:
        raise RuntimeError(f"not every attempt was delivered: {sorted(set(outcomes))}")
    return {"attempts": count, "cpu_ms": cpu * 1000 / count, "wall_ms": wall * 1000 / count}


def scenario_webhooks(ctx: dict[str, Any], quick: bool, say: Callable[[str], None]) -> dict[str, Any]:
    from apps.jobs.models import Job

    count = 200 if quick else 1000
    say(f"7. webhook delivery: {count} attempts to a local receiver, a new HTTP client per attempt vs the "
        "shared one (worker CPU per attempt)")
    job, event = _finished_job(ctx["user"])
    result: dict[str, Any] = {}
    try:
        with private_allowed(), receiver() as url:
            with client_per_attempt():
                attempts(job, event, url, 10)  # warm: imports, the database connection
                result["client_per_attempt"] = attempts(job, event, url, count)
            attempts(job, event, url, 10)  # warm: a worker builds its client once, at its first attempt
            result["shared_client"] = attempts(job, event, url, count)
    finally:
        Job.objects.filter(pk=job.pk).delete()  # and its deliveries and attempts
    result["cpu_ratio"] = result["client_per_attempt"]["cpu_ms"] / result["shared_client"]["cpu_ms"]
    return result


def report_rows(w: dict[str, Any]) -> list[str]:
    before, after = w["client_per_attempt"], w["shared_client"]
    return [f"| 10. webhook delivery ({after['attempts']} attempts, local receiver) | worker CPU per attempt: "
            f"new client per attempt · shared client | {before['cpu_ms']:.2f} ms · {after['cpu_ms']:.2f} ms "
            f"({w['cpu_ratio']:.0f}× less) |",
            f"| | wall time per attempt (sequential) | {before['wall_ms']:.2f} ms · {after['wall_ms']:.2f} ms |"]


def _standalone() -> None:
    """Django on the bench's own embedded servers (var/bench), as `python -m bench` sets it up."""
    os.environ.update({"OPIE_VAR_DIR": str(ROOT / "var" / "bench"), "DJANGO_SETTINGS_MODULE": "config.settings",
                       "AGNO_TELEMETRY": "false", "AGENTOS_POOL_PREWARM": "0", "LOG_LEVEL": "WARNING"})
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        os.environ.pop(name, None)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    def say(text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)

    call_command("migrate", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username="bench")
    result = scenario_webhooks({"user": user}, "--quick" in sys.argv, say)
    print("\n".join(report_rows(result)))


if __name__ == "__main__":
    receive() if sys.argv[1:2] == ["receive"] else _standalone()
