"""Flower as `make run` and Compose start it (`manage.py opie_flower`): a real process
against the tests' broker, watching a real worker."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from celery_app import QUEUES
from tests.conftest import ROOT, wait_for_job, worker_env
from tests.factories import make_agent

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

AUTH = ("flower-admin", "s3cret-pass")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen after {timeout}s")
        time.sleep(0.3)


@pytest.fixture
def flower(transactional_db: Any, tmp_path: Path) -> Iterator[httpx.Client]:
    """A Flower process on a free loopback port with basic auth; killed afterwards."""
    port, log = free_port(), tmp_path / "flower.log"
    env = worker_env(FLOWER_BASIC_AUTH=f"{AUTH[0]}:{AUTH[1]}")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "manage.py", "opie_flower", f"--port={port}"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            def answers() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"flower exited early:\n{log.read_text()[-3000:]}")
                try:
                    return client.get("/healthcheck").status_code == 200
                except httpx.TransportError:
                    return False

            poll(answers, 60, "Flower answering")
            yield client
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_flower_asks_for_credentials_on_every_page_but_the_healthcheck(flower):
    for path in ("/", "/api/workers", "/metrics", "/tasks"):
        anonymous = flower.get(path)
        wrong = flower.get(path, auth=(AUTH[0], "wrong"))
        assert anonymous.status_code == 401, path
        assert wrong.status_code == 401, path
        if not path.startswith("/api/"):  # pages ask the browser for credentials; the API just refuses
            assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="flower"', path
    assert flower.get("/healthcheck").text == "OK"
    assert flower.get("/metrics", auth=AUTH).status_code == 200


def test_flower_lists_the_worker_with_our_queues_and_counts_its_tasks(flower, start_worker, http, user):
    worker = start_worker()  # consumes agents, sync and webhooks

    def listed() -> dict[str, Any] | None:
        workers = flower.get("/api/workers", params={"refresh": "1"}, auth=AUTH).json()
        info = workers.get(worker.name) or {}
        return info if info.get("active_queues") else None

    info = poll(listed, 30, f"{worker.name} in /api/workers")
    assert {queue["name"] for queue in info["active_queues"]} == {"agents", "sync", "webhooks"} < set(QUEUES)
    assert info["stats"]["pool"]["implementation"].endswith("TaskPool")

    agent = make_agent(user)
    accepted = http.post("send-message/", json={"agent_id": agent.public_id, "message": "count me"}).json()
    assert wait_for_job(http, accepted["job_id"])["status"] == "succeeded"

    task = 'task="workers.tasks.run_message_task"'

    def counted() -> str | None:
        metrics = flower.get("/metrics", auth=AUTH).text
        succeeded = [line for line in metrics.splitlines() if line.startswith("flower_events_total{")
                     and task in line and 'type="task-succeeded"' in line and f'worker="{worker.name}"' in line]
        return metrics if succeeded and float(succeeded[0].rsplit(" ", 1)[1]) >= 1 else None

    metrics = poll(counted, 30, "the task's events in /metrics")
    # earlier tests may leave messages queued that this worker also runs: at least ours
    runs = re.findall(r'^flower_task_runtime_seconds_count\{.*task="workers.tasks.run_message_task".*\} (\S+)$',
                      metrics, re.MULTILINE)
    assert runs and float(runs[0]) >= 1


def test_flower_refuses_to_start_without_credentials(transactional_db):
    port = free_port()
    for auth in ("", "just-a-user"):
        result = subprocess.run([sys.executable, "manage.py", "opie_flower", f"--port={port}"], cwd=ROOT,
                                env=worker_env(FLOWER_BASIC_AUTH=auth), capture_output=True, text=True,
                                timeout=60)
        assert result.returncode != 0
        assert "FLOWER_BASIC_AUTH" in result.stderr
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "nothing listens"
