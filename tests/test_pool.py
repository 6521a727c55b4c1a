"""The warm pool: rebuild on version bump, broadcast invalidation, bounds, prewarm,
thread safety, and its stats exposed on running workers."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from apps.chat.models import ChatMessage
from apps.jobs.services import message_send
from tests.factories import make_agent, make_token, make_user
from workers.execution import execute_message_job
from workers.pool import AgentPool, prewarm


@pytest.mark.django_db
def test_idle_entries_are_evicted(user):
    pool = AgentPool(capacity=8, idle_seconds=0.05)
    pool.parts_for(make_agent(user, name="old"))
    time.sleep(0.1)
    new = make_agent(user, name="new")

    pool.parts_for(new)

    assert pool.snapshot()["agents"] == [new.pk] and pool.stats.evictions == 1


@pytest.mark.django_db
def test_prewarm_builds_the_most_recently_used_agents(user):
    agents = [make_agent(user, name=f"a{i}") for i in range(4)]
    for agent in (agents[0], agents[2], agents[3]):
        message_send(user=user, agent=agent, message="hi")
    pool = AgentPool(capacity=8)

    built = prewarm(pool, 2)

    assert built == 2 and pool.snapshot()["agents"] == sorted([agents[2].pk, agents[3].pk])


@pytest.mark.django_db
def test_invalidate_drops_one_agent_or_all(user):
    pool = AgentPool(capacity=8)
    first, second = make_agent(user, name="1"), make_agent(user, name="2")
    pool.parts_for(first)
    pool.parts_for(second)

    assert pool.invalidate(first.pk) == 1 and pool.snapshot()["agents"] == [second.pk]
    assert pool.invalidate(None) == 1 and pool.snapshot()["size"] == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_on_one_agent_keep_their_histories_apart(user):
    agent = make_agent(user, tools=["calculator", "current_time"])
    firsts = [message_send(user=user, agent=agent, message=f"first-{i}") for i in range(24)]
    for job in firsts:
        execute_message_job(job.pk)
    seconds = [message_send(user=user, agent=agent, message=f"second-{i}", session=job.session)
               for i, job in enumerate(firsts)]

    def run(job_id):
        try:
            return execute_message_job(job_id)
        finally:
            connection.close()  # as Celery does after each task

    with ThreadPoolExecutor(24) as threads:
        outcomes = list(threads.map(run, [job.pk for job in seconds]))

    assert outcomes == ["succeeded"] * 24
    for i, job in enumerate(seconds):
        assert ChatMessage.objects.get(job=job, role="assistant").content == f"Echo #2: second-{i}"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_pool_stats_are_exposed_and_a_broadcast_drops_stale_entries(http, start_worker, user, live_server):
    import httpx

    from apps.agents.broadcast import pool_invalidate, pool_stats

    worker = start_worker()
    agent = make_agent(user)
    job_id = http.post("send-message/", json={"agent_id": agent.public_id, "message": "warm up"}).json()["job_id"]
    while http.get(f"jobs/{job_id}/").json()["status"] != "succeeded":
        time.sleep(0.05)

    before = pool_stats(timeout=2)[worker.name]
    pool_invalidate(agent_pk=agent.pk)
    time.sleep(0.5)
    after = pool_stats(timeout=2)[worker.name]

    assert agent.pk in before["agents"] and before["builds"] >= 1 and before["misses"] >= 1
    from celery_app import app

    flower_view = app.control.inspect(destination=[worker.name], timeout=2).stats()[worker.name]
    assert flower_view["opie_pool"]["builds"] >= 1, "inspect stats (Flower's worker page) shows the pool"
    assert agent.pk not in after["agents"] and after["invalidations"] >= 1
    staff = make_user("root", is_staff=True)
    info = httpx.get(f"{live_server.url}/api/v1/agentos/info/",
                     headers={"Authorization": f"Bearer {make_token(staff)}"}).json()
    assert worker.name in info["pool"]
    assert "pool" not in http.get("info/").json() or http.get("info/").json()["pool"] is None
