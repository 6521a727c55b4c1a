"""With real worker processes: a killed worker, a flushed Redis, a running cancel,
concurrent duplicates. Every accepted job ends once, with exactly one reply."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from apps.chat.models import ChatMessage
from apps.jobs.models import Job
from apps.jobs.sweeper import jobs_sweep
from tests.conftest import wait_for_job
from tests.factories import make_agent

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def sweep_until_done(job_ids, timeout=60):
    """What Celery beat does every AGENTOS_SWEEP_INTERVAL, done here every half second."""
    deadline = time.monotonic() + timeout
    while Job.objects.filter(public_id__in=job_ids).exclude(status__in=Job.TERMINAL).exists():
        assert time.monotonic() < deadline, list(Job.objects.filter(public_id__in=job_ids).values("status"))
        jobs_sweep()
        time.sleep(0.5)


def assert_each_succeeded_with_one_reply(job_ids):
    jobs = Job.objects.filter(public_id__in=job_ids)
    assert sorted(job.status for job in jobs) == ["succeeded"] * len(job_ids)
    for job in jobs:
        assert ChatMessage.objects.filter(job=job, role="assistant").count() == 1


def test_a_worker_killed_mid_run_loses_no_job(http, start_worker, user, settings):
    settings.AGENTOS_LEASE_SECONDS = 2
    doomed = start_worker(name="doomed", concurrency=20, AGENTOS_LEASE_SECONDS="2")
    agent = make_agent(user, model_options={"latency_ms": 3000})
    job_ids = [http.post("send-message/", json={"agent_id": agent.public_id, "message": f"k{i}"}).json()["job_id"]
               for i in range(10)]
    deadline = time.monotonic() + 20
    while Job.objects.filter(status="running").count() < 10:
        assert time.monotonic() < deadline, "the runs never started"
        time.sleep(0.1)

    doomed.kill()  # SIGKILL mid-run: no warm shutdown, no acks, leases stop being renewed
    start_worker(name="rescuer", concurrency=20, AGENTOS_LEASE_SECONDS="2")
    sweep_until_done(job_ids)

    assert_each_succeeded_with_one_reply(job_ids)
    assert all(job.attempts == 2 for job in Job.objects.filter(public_id__in=job_ids))


def test_a_redis_that_lost_everything_loses_no_job(http, start_worker, user, settings):
    settings.AGENTOS_REQUEUE_AFTER = 1
    agent = make_agent(user)
    job_ids = [http.post("send-message/", json={"agent_id": agent.public_id, "message": f"f{i}"}).json()["job_id"]
               for i in range(10)]
    assert Job.objects.filter(public_id__in=job_ids, enqueued_at__isnull=False).count() == 10

    redis.Redis.from_url(settings.REDIS_URL).flushdb()  # every queued message is gone
    start_worker()
    time.sleep(1.1)
    sweep_until_done(job_ids)

    assert_each_succeeded_with_one_reply(job_ids)


def test_a_running_job_is_cancelled_at_its_next_safe_point(http, start_worker, user):
    start_worker()
    agent = make_agent(user, model_options={"latency_ms": 10_000})
    job_id = http.post("send-message/", json={"agent_id": agent.public_id, "message": "long"}).json()["job_id"]
    while http.get(f"jobs/{job_id}/").json()["status"] != "running":
        time.sleep(0.05)

    started = time.monotonic()
    assert http.post(f"jobs/{job_id}/cancel/").status_code == 202
    job = wait_for_job(http, job_id, timeout=10)

    assert job["status"] == "cancelled" and time.monotonic() - started < 5
    assert not ChatMessage.objects.filter(job__public_id=job_id, role="assistant").exists()


def test_concurrent_duplicates_with_one_idempotency_key_create_one_job(http, start_worker, user):
    start_worker()
    agent = make_agent(user)

    def post(_):
        return http.post("send-message/", json={"agent_id": agent.public_id, "message": "dup"},
                         headers={"Idempotency-Key": "same-key"})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(16)))

    accepted = [r.json()["job_id"] for r in responses if r.status_code == 202]
    assert {r.status_code for r in responses} <= {202, 409}
    assert len(set(accepted)) == 1 and Job.objects.count() == 1
    assert wait_for_job(http, accepted[0])["status"] == "succeeded"
