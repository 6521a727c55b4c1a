"""The web as `make run` serves it: the Procfile's own `web:` command line (gunicorn with
uvicorn workers) as a real process, against the test database, with real workers.

Waiting clients hold no thread: more of them than the old thread count (two processes
of 16 threads) are all served to their terminal events while other requests are
answered, and the web's threads stay as many as configured."""
from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import psutil
import pytest
from django.db import connection

from apps.jobs.services import message_send
from tests.conftest import ROOT, end_groups, stop_group, worker_env
from tests.factories import make_agent
from workers.execution import execute_message_job

pytestmark = pytest.mark.django_db(transaction=True)

WEB_THREADS = 16  # the default: config/settings/services.py


def procfile_command(name: str) -> str:
    """A Procfile line's command, as honcho hands it to the shell."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name}: line in the Procfile")


class Web:
    """The Procfile's web command, in its own process group, on a free port."""

    def __init__(self, log: Path, **env: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(log, "w")
        self.log = log
        environment = worker_env(DB_POOL_SIZE="0", OPIE_WEB_PORT=str(port), **env)  # the web is unpooled
        self.proc = subprocess.Popen(["/bin/sh", "-c", procfile_command("web")], cwd=ROOT, env=environment,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"web did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def workers(self) -> list[psutil.Process]:
        """gunicorn's worker processes (the master's children)."""
        return psutil.Process(self.proc.pid).children(recursive=True)

    def stop(self) -> None:
        stop_group(self.proc, timeout=20)
        self._log.close()


@pytest.fixture
def start_web(transactional_db: Any, tmp_path: Path) -> Iterator[Callable[..., Web]]:
    started: list[Web] = []

    def start(**env: str) -> Web:
        web = Web(tmp_path / f"web{len(started)}.log", **env)
        started.append(web)
        return web

    yield start
    end_groups([web.proc for web in started])
    for web in started:
        web.stop()  # closes its log


def hub_connections(pids: list[int]) -> list[dict[str, Any]]:
    """These processes' events-hub connections, as Redis lists them."""
    import redis
    from django.conf import settings

    from apps.events.hub import CLIENT_NAME
    from apps.events.pubsub import redis_url

    clients = redis.Redis.from_url(redis_url(settings.REDIS_URL)).client_list()
    names = {f"{CLIENT_NAME}-{pid}" for pid in pids}
    return [client for client in clients if client.get("name") in names]


def test_the_procfile_serves_the_asgi_application_on_uvicorn_workers():
    command = procfile_command("web")

    assert "config.asgi:application" in command
    assert re.search(r"--worker-class[ =]uvicorn_worker\.UvicornWorker", command)


def test_make_run_gives_workers_a_lower_cpu_priority_than_the_web():
    assert not procfile_command("web").startswith("nice")
    for name in ("worker", "knowledge", "flower"):
        assert re.search(r"(^|\s)nice -n [1-9]\d* ", procfile_command(name)), name


async def _follow_sse(client: httpx.AsyncClient, job_id: str) -> str | None:
    """The terminal event type a stream ends with (None if it ends without one)."""
    last = None
    async with client.stream("GET", f"jobs/{job_id}/events/") as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("event: job."):
                last = line.removeprefix("event: ")
    return last if last in ("job.succeeded", "job.failed", "job.cancelled", "job.expired") else None


async def _long_poll(client: httpx.AsyncClient, job_id: str) -> str:
    while True:
        response = await client.get(f"jobs/{job_id}/wait/", params={"timeout": 30})
        assert response.status_code == 200
        if response.json()["status"] not in ("queued", "running"):
            return response.json()["status"]


@pytest.mark.worker
def test_more_waiters_than_the_old_thread_count_are_all_served_while_other_requests_are_answered(
        start_web, start_worker, user, token):
    web = start_web()
    agent = make_agent(user, model_options={"latency_ms": 1000})
    count = 100  # 100 SSE streams + 100 long-polls: 200 waiters, where 2 × 16 threads froze the API at 33
    answered: dict[str, float] = {}
    hubs: list[dict[str, Any]] = []

    async def scenario() -> tuple[list[str | None], list[str], list[int]]:
        limits = httpx.Limits(max_connections=2 * count + 20, max_keepalive_connections=2 * count + 20)
        async with httpx.AsyncClient(base_url=f"{web.url}/api/v1/agentos/", limits=limits, timeout=60,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            # queued, and they stay so until the worker starts below
            accepted = [await client.post("send-message/", json={"agent_id": agent.public_id, "message": f"m{i}"})
                        for i in range(count)]
            assert {r.status_code for r in accepted} == {202}
            job_ids = [r.json()["job_id"] for r in accepted]
            streams = [asyncio.create_task(_follow_sse(client, job_id)) for job_id in job_ids]
            polls = [asyncio.create_task(_long_poll(client, job_id)) for job_id in job_ids]
            await asyncio.sleep(1.5)  # every waiter is connected and waiting
            threads = [process.num_threads() for process in web.workers()]
            deadline = time.monotonic() + 15  # until every waiter's job channel is subscribed
            while True:
                hubs[:] = hub_connections([process.pid for process in web.workers()])
                if sum(int(hub["sub"]) for hub in hubs) > count or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            started = time.monotonic()
            for name, request in (("agents", client.get("agents/")), ("job", client.get(f"jobs/{job_ids[0]}/")),
                                  ("send", client.post("send-message/", json={"agent_id": agent.public_id,
                                                                                "message": "and me"}))):
                response = await asyncio.wait_for(request, 10)
                assert response.status_code in (200, 202), (name, response.text[:200])
                answered[name] = time.monotonic() - started
            assert not any(task.done() for task in streams + polls), "answered while every waiter waited"
            await asyncio.to_thread(start_worker, concurrency=120)  # now the jobs run
            return (await asyncio.gather(*streams), await asyncio.gather(*polls), threads)

    streams, polls, threads = asyncio.run(scenario())

    assert streams == ["job.succeeded"] * count
    assert polls == ["succeeded"] * count
    assert set(answered) == {"agents", "job", "send"}
    # each worker process keeps its configured threads (plus a few of its own), not one per waiter
    assert threads and all(n <= WEB_THREADS + 8 for n in threads), threads
    # and one Redis subscriber, whatever its waiters: together they follow every job's channel
    assert 1 <= len(hubs) <= len(threads), hubs
    assert sum(int(hub["sub"]) for hub in hubs) > count, hubs  # each: its jobs' channels and opie:hub


def test_a_stream_and_a_long_poll_still_end_when_the_web_cannot_reach_redis(start_web, user, token, tmp_path):
    dead = f"unix://{tmp_path}/no-redis.sock?db=0"
    web = start_web(REDIS_URL=dead, CELERY_BROKER_URL=f"redis+socket://{tmp_path}/no-redis.sock",
                    AGENTOS_EVENTS_RECHECK_SECONDS="0.3")
    job = message_send(user=user, agent=make_agent(user), message="no pub/sub here")
    results: dict[str, Any] = {}

    def follow() -> None:
        with httpx.Client(base_url=f"{web.url}/api/v1/agentos/", timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            results["poll"] = client.get(f"jobs/{job.public_id}/wait/", params={"timeout": 20}).json()
            with client.stream("GET", f"jobs/{job.public_id}/events/") as response:
                results["events"] = [line.removeprefix("event: ") for line in response.iter_lines()
                                     if line.startswith("event: ")]

    def run_job() -> None:
        time.sleep(1)
        try:
            execute_message_job(job.pk)
        finally:
            connection.close()

    started = time.monotonic()
    threads = [threading.Thread(target=follow), threading.Thread(target=run_job)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(40)

    assert results["poll"]["status"] == "succeeded", results
    assert results["events"] == ["job.queued", "job.running", "job.succeeded"]
    assert time.monotonic() - started < 15
    assert results["poll"]["result"]["content"] == "Echo #1: no pub/sub here"
    assert "Redis pub/sub unavailable" in web.log.read_text()


def test_static_files_are_served_whole_by_the_asgi_application(live_server, recwarn):
    """An asset comes back byte for byte with its length, in one piece: no thread hop
    per block of the file (Django warns when it has to make one)."""
    asset = ROOT / "apps" / "opie" / "static" / "opie" / "htmx.min.js"

    response = httpx.get(f"{live_server.url}/static/opie/htmx.min.js", timeout=10)

    assert response.status_code == 200 and response.content == asset.read_bytes()
    assert int(response.headers["Content-Length"]) == asset.stat().st_size
    assert not [w for w in recwarn if "synchronous iterators" in str(w.message)]


def test_the_web_collects_garbage_rarely_and_never_walks_what_it_loaded_at_start(live_server, settings):
    """With thousands of waiters open, a full collection over every live object stopped the
    event loop for up to a second: at start-up the server freezes what it loaded and raises
    the collector's thresholds (WEB_GC_THRESHOLDS)."""
    import gc

    assert httpx.get(f"{live_server.url}/healthz", timeout=10).status_code == 200
    assert gc.get_threshold() == tuple(settings.WEB_GC_THRESHOLDS)
    young, middle, full = settings.WEB_GC_THRESHOLDS
    assert young * middle * full >= 1000 * 700 * 10 * 10, "full collections at least a thousand times rarer"
    assert gc.get_freeze_count() > 10_000, "Django, the URLconf and the API are out of every collection"
