"""End to end over HTTP with real Celery worker processes, PostgreSQL and Redis."""
from __future__ import annotations

import json
import time

import pytest

from apps.chat.models import ChatMessage
from apps.jobs.models import Job
from tests.conftest import WORKER_DB_POOL_SIZE, wait_for_job
from tests.factories import make_agent

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_a_message_sent_over_http_is_answered_by_a_worker(http, start_worker, user):
    start_worker()
    agent = make_agent(user)

    accepted = http.post("send-message/", json={"agent_id": agent.public_id, "message": "Hello, worker"})
    job = wait_for_job(http, accepted.json()["job_id"])

    assert accepted.status_code == 202
    assert job["status"] == "succeeded", job
    assert job["result"]["content"] == "Echo #1: Hello, worker"
    session = http.get(f"sessions/{job['session_id']}/").json()
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("user", "Hello, worker"), ("assistant", "Echo #1: Hello, worker")]
    assert session["messages"][1]["id"] == job["result"]["message_id"]


def test_rapid_messages_to_one_session_are_answered_in_order_with_history(http, start_worker, user):
    start_worker(concurrency=8)
    agent = make_agent(user, model_options={"latency_ms": 50})
    first = http.post("send-message/", json={"agent_id": agent.public_id, "message": "m1"}).json()
    jobs = [first] + [http.post("send-message/", json={"agent_id": agent.public_id, "message": f"m{i}",
                                                       "session_id": first["session_id"]}).json()
                      for i in range(2, 6)]

    finished = [wait_for_job(http, job["job_id"]) for job in jobs]

    assert [job["status"] for job in finished] == ["succeeded"] * 5
    transcript = http.get(f"sessions/{first['session_id']}/").json()["messages"]
    assert [m["content"] for m in transcript if m["role"] == "assistant"] == [
        f"Echo #{i}: m{i}" for i in range(1, 6)]
    assert [m["role"] for m in transcript] == ["user", "assistant"] * 5


def test_a_tool_call_through_the_worker_is_recorded(http, start_worker, user):
    start_worker()
    agent = make_agent(user, tools=["calculator", "current_time"])

    accepted = http.post("send-message/", json={"agent_id": agent.public_id, "message": "/tool calculator 6*7"})
    job = wait_for_job(http, accepted.json()["job_id"])

    assert job["result"]["content"] == "calculator returned: 42"
    assert job["result"]["tool_calls"][0]["name"] == "calculator"


def test_one_worker_process_holds_a_hundred_slow_runs_in_flight_at_once(http, start_worker, user):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from apps.accounts.models import UserQuota

    UserQuota.objects.create(user=user, max_running=0)  # one user stands for many here: no per-user window
    start_worker(concurrency=100)
    agent = make_agent(user, model_options={"latency_ms": 8000})

    def submit(i):
        return http.post("send-message/", json={"agent_id": agent.public_id, "message": f"n{i}"}).json()

    def connections() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
            return cursor.fetchone()[0]

    with ThreadPoolExecutor(16) as pool:
        jobs = list(pool.map(submit, range(100)))
    in_flight = []
    while Job.objects.filter(status="running").count() < 100 and len(in_flight) < 100:
        in_flight.append(connections())
        time.sleep(0.05)
    in_flight.append(connections())  # all 100 running: their threads share the worker's pool
    finished = [wait_for_job(http, job["job_id"], timeout=60) for job in jobs]

    assert all(job["status"] == "succeeded" for job in finished)
    starts = sorted(job["started_at"] for job in finished)
    ends = sorted(job["finished_at"] for job in finished)
    assert starts[-1] < ends[0], "all 100 eight-second runs were in flight at the same time"
    assert ChatMessage.objects.filter(role="assistant").count() == 100
    # 100 threads in flight never hold more than the worker's pool (plus this test's own and the live server's)
    assert max(in_flight) <= int(WORKER_DB_POOL_SIZE) + 3, in_flight
    assert connections() <= int(WORKER_DB_POOL_SIZE) + 3


def test_a_few_pooled_connections_serve_many_threads_running_messages_and_their_webhooks(http, start_worker, user):
    """No task keeps one of the worker's pooled connections after it ends: with two
    connections for twenty threads, a thread that held on to one (Celery's Django
    fixup reusing it, say) would leave the others waiting out DB_POOL_TIMEOUT."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.webhook_receiver import Receiver

    start_worker(queues="agents,webhooks", concurrency=20, DB_POOL_SIZE="2", DB_POOL_TIMEOUT="3",
                 AGENTOS_WEBHOOK_ALLOW_PRIVATE="1")
    agent = make_agent(user)
    with Receiver([200] * 40) as receiver:
        def submit(i):
            return http.post("send-message/", json={"agent_id": agent.public_id, "message": f"n{i}",
                                                    "callback_url": receiver.url + "/hook"}).json()

        with ThreadPoolExecutor(8) as pool:
            jobs = list(pool.map(submit, range(40)))
        finished = [wait_for_job(http, job["job_id"], timeout=30) for job in jobs]
        receiver.wait_for(40, timeout=30)

    assert [job["status"] for job in finished] == ["succeeded"] * 40
    delivered = sorted(json.loads(r["body"])["data"]["job_id"] for r in receiver.requests)
    assert delivered == sorted(job["job_id"] for job in jobs), "one webhook per job, every one delivered"
