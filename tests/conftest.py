"""Fixtures: real PostgreSQL (pgvector), real Redis, real Celery worker processes, and the
web served as in production: Opie's ASGI application on uvicorn."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from django.conf import settings
from django.db import connection

from tests.factories import make_agent, make_token, make_user

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """pytest-django's test database, and before it is dropped, the end of every other
    session on it: the ASGI live server runs views on executor threads of this process,
    and their connections outlive it (DROP DATABASE refuses while one is open)."""
    yield
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")


@pytest.fixture(scope="session", autouse=True)
def _clean_broker() -> None:
    """The tests' Redis database starts empty: no message from an earlier run leaks in."""
    import redis

    redis.Redis.from_url(settings.REDIS_URL).flushdb()


@pytest.fixture(autouse=True)
def _clean_cache() -> None:
    """Each test starts with no cached agent, permission or session: the database
    is flushed or rolled back between tests, and those writes invalidate nothing."""
    from django.core.cache import cache

    cache.delete_pattern("agentos_*")


@pytest.fixture
def user(db: Any) -> Any:
    return make_user("alice")


@pytest.fixture
def other_user(db: Any) -> Any:
    return make_user("mallory")


@pytest.fixture
def token(user: Any) -> str:
    return make_token(user)


@pytest.fixture
def api(client: Any, token: str) -> Any:
    """Django's test client speaking JSON with alice's bearer token."""
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def other_api(token: str, other_user: Any) -> Any:
    from django.test import Client

    return Client(HTTP_AUTHORIZATION=f"Bearer {make_token(other_user)}")


@pytest.fixture
def alice(client: Any, user: Any) -> Any:
    """Django's test client logged in to the web pages as alice (session auth)."""
    client.force_login(user)
    return client


@pytest.fixture
def mallory(other_user: Any) -> Any:
    """Another browser, logged in as mallory."""
    from django.test import Client

    client = Client()
    client.force_login(other_user)
    return client


@pytest.fixture
def agent(user: Any) -> Any:
    return make_agent(user)


# a worker's database connections, pooled as in production (settings: DB_POOL_SIZE)
WORKER_DB_POOL_SIZE = "10"


def worker_env(**extra: str) -> dict[str, str]:
    """A worker process reaches the test database and the tests' Redis database."""
    db = connection.settings_dict
    query = f"?host={db['HOST']}" if db["HOST"].startswith("/") else ""
    host = "" if query else db["HOST"]
    port = f":{db['PORT']}" if db["PORT"] else ""
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test",
           "DATABASE_URL": f"postgresql://{auth}@{host}{port}/{db['NAME']}{query}",
           "REDIS_URL": settings.REDIS_URL, "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
           "PYTHONUNBUFFERED": "1", "AGNO_TELEMETRY": "false", "DB_POOL_SIZE": WORKER_DB_POOL_SIZE}
    env.update(extra)
    return env


class WorkerProcess:
    """`celery worker` as a real child process, killable like in production."""

    def __init__(self, name: str, queues: str, concurrency: int, env: dict[str, str], log: Path) -> None:
        self.name = f"{name}@{os.uname().nodename}"
        self.log = log
        self._out = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", "threads",
             "--concurrency", str(concurrency), "-Q", queues, "-n", self.name, "--without-mingle",
             "--without-gossip", "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log.read_text()[-3000:]}")
            if " ready." in self.log.read_text():
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group: no warm shutdown, no acks."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        stop_group(self.proc)
        self._out.close()


def end_groups(procs: list[subprocess.Popen[Any]]) -> None:
    """A test's teardown: the test is over, so what its processes would still do does not matter.
    SIGKILL every process group at once (a warm shutdown costs about 2 s per worker: its event
    loop's one-second poll, then the pool's shutdown; the tests that need one call `stop`), then
    drop what the killed workers had taken and not acknowledged: unacked messages would be
    restored into a later test by a worker with a short visibility timeout. The queues and their
    bindings stay (the test process's producer has them cached as declared)."""
    import redis

    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.wait(10)
    redis.Redis.from_url(settings.REDIS_URL).delete("unacked", "unacked_index", "unacked_mutex")


def stop_group(proc: subprocess.Popen[Any], timeout: float = 15) -> None:
    """SIGTERM a child's whole process group (a warm shutdown), SIGKILL it if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture
def start_worker(transactional_db: Any, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes for one test; they are stopped afterwards."""
    started: list[WorkerProcess] = []

    def start(name: str = "agents", queues: str = "agents,sync,webhooks", concurrency: int = 8,
              **env: str) -> WorkerProcess:
        worker = WorkerProcess(f"{name}{len(started)}", queues, concurrency, worker_env(**env),
                               tmp_path / f"{name}{len(started)}.log")
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    end_groups([worker.proc for worker in started])
    for worker in started:
        worker.stop()  # closes its log


class AsgiLiveServer:
    """`config.asgi:application` on uvicorn (uvloop, httptools: what gunicorn's uvicorn
    workers run), in a thread of the test process so it shares the test database and
    the settings a test changes. Replaces pytest-django's WSGI live server; the
    Procfile's own command line is tested in tests/test_serving.py."""

    def __init__(self, lifespan: str = "on") -> None:
        import uvicorn
        from django.test.utils import modify_settings

        from config.asgi import application

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(application, loop="uvloop", http="httptools", lifespan=lifespan,
                                                     log_level="warning", access_log=False))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the ASGI test server did not start")
            time.sleep(0.02)
        # what pytest-django's helper enables around each test that uses the live server
        self._live_server_modified_settings = modify_settings(ALLOWED_HOSTS={"append": "127.0.0.1"})

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._socket.close()

    def __str__(self) -> str:
        return self.url


@pytest.fixture(scope="session")
def live_server() -> Iterator[AsgiLiveServer]:
    server = AsgiLiveServer()
    yield server
    server.stop()


@pytest.fixture
def http(live_server: Any, token: str) -> Iterator[httpx.Client]:
    """A real HTTP client against a real HTTP server, with alice's token."""
    with httpx.Client(base_url=f"{live_server.url}/api/v1/agentos/",
                      headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        yield client


def wait_for_job(client: httpx.Client, job_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"jobs/{job_id}/").json()
        if job["status"] in ("succeeded", "failed", "cancelled", "expired"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")
        time.sleep(0.1)
