"""Many users on one queue, with real worker processes: each user's admission window
(AGENTOS_USER_MAX_RUNNING, or their quota) keeps one user's backlog from holding back
another's jobs, caps what runs at once across worker processes, orders a user's own
waiting jobs by priority, and never breaks a session's order. Past the queue caps a
new job is a 429 `queue_full` that writes nothing."""
from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from apps.accounts.models import UserQuota
from apps.chat.models import ChatMessage, ChatSession
from apps.jobs.dispatch import jobs_admit
from apps.jobs.models import Job
from apps.jobs.services import message_send
from tests.conftest import wait_for_job
from tests.factories import make_agent, make_token, make_user

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def wait_all(job_ids: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while Job.objects.filter(public_id__in=job_ids).exclude(status__in=Job.TERMINAL).exists():
        assert time.monotonic() < deadline, "jobs still unfinished"
        time.sleep(0.1)


def test_a_backlog_of_one_user_does_not_hold_back_another(http, start_worker, user, settings):
    settings.AGENTOS_USER_MAX_RUNNING = 10
    start_worker(concurrency=16, AGENTOS_USER_MAX_RUNNING="10")
    noisy = make_agent(user, model_options={"latency_ms": 2000})
    backlog = [message_send(user=user, agent=noisy, message=f"a{i}") for i in range(300)]
    bob = make_user("bob")
    quiet = make_agent(bob)
    time.sleep(1)  # the noisy user's first runs are under way

    with_bob = {"Authorization": f"Bearer {make_token(bob)}"}
    sent = [http.post("send-message/", json={"agent_id": quiet.public_id, "message": f"b{i}"},
                      headers=with_bob).json()["job_id"] for i in range(5)]
    with httpx.Client(base_url=http.base_url, headers=with_bob, timeout=30) as as_bob:
        finished = [wait_for_job(as_bob, job_id, timeout=20) for job_id in sent]

    assert [job["status"] for job in finished] == ["succeeded"] * 5
    waits = [(job.started_at - job.created_at).total_seconds() for job in Job.objects.filter(public_id__in=sent)]
    assert max(waits) < 3, waits  # first come first served, they would wait behind ~290 runs of 2 s
    assert Job.objects.filter(pk__in=[j.pk for j in backlog], status="queued").count() > 200
    assert Job.objects.filter(owner=user, status="running").count() <= 10
    Job.objects.filter(owner=user, status="queued").update(status="cancelled")  # the rest need not run


def test_the_running_cap_holds_across_two_worker_processes(start_worker, user, settings):
    settings.AGENTOS_USER_MAX_RUNNING = 20
    UserQuota.objects.create(user=user, max_running=3)  # the admin's per-user override
    for name in ("left", "right"):
        start_worker(name=name, concurrency=10)
    agent = make_agent(user, model_options={"latency_ms": 300})
    jobs = [message_send(user=user, agent=agent, message=f"m{i}").public_id for i in range(30)]
    most, done = 0, threading.Event()

    def watch() -> None:
        nonlocal most
        while not done.is_set():
            most = max(most, Job.objects.filter(owner=user, status="running").count())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        wait_all(jobs)
    finally:
        done.set()
        watcher.join()

    assert Job.objects.filter(public_id__in=jobs, status="succeeded").count() == 30
    assert most == 3  # reached, never passed, though 20 threads could have run them
    assert len({j.worker.split("@")[0] for j in Job.objects.filter(public_id__in=jobs)}) == 2  # both took part


def test_a_users_own_waiting_jobs_run_by_priority(http, start_worker, user, settings):
    settings.AGENTOS_USER_MAX_RUNNING = 20
    UserQuota.objects.create(user=user, max_running=1)
    agent = make_agent(user, model_options={"latency_ms": 500})
    first = message_send(user=user, agent=agent, message="first")
    sent = {priority: http.post("send-message/", json={"agent_id": agent.public_id, "message": priority,
                                                        "priority": priority}).json()["job_id"]
            for priority in ("low", "normal", "high")}
    start_worker()

    wait_all([first.public_id, *sent.values()])

    started = {p: Job.objects.get(public_id=job_id).started_at for p, job_id in sent.items()}
    assert started["high"] < started["normal"] < started["low"]
    assert http.get(f"jobs/{sent['high']}/").json()["status"] == "succeeded"


def test_a_sessions_order_comes_before_priority_and_the_window(http, start_worker, user, settings):
    settings.AGENTOS_USER_MAX_RUNNING = 20
    UserQuota.objects.create(user=user, max_running=2)
    start_worker()
    agent = make_agent(user, model_options={"latency_ms": 50})
    first = http.post("send-message/", json={"agent_id": agent.public_id, "message": "m1"}).json()
    rest = [http.post("send-message/", json={"agent_id": agent.public_id, "message": f"m{i}",
                                             "session_id": first["session_id"],
                                             "priority": "high" if i % 2 else "low"}).json()["job_id"]
            for i in range(2, 7)]
    others = [message_send(user=user, agent=agent, message=f"o{i}").public_id for i in range(6)]

    wait_all([first["job_id"], *rest, *others])

    transcript = http.get(f"sessions/{first['session_id']}/").json()["messages"]
    assert [m["content"] for m in transcript if m["role"] == "assistant"] == [f"Echo #{i}: m{i}" for i in range(1, 7)]
    assert Job.objects.filter(public_id__in=others, status="succeeded").count() == 6


def test_admission_holds_a_message_back_until_the_earlier_one_of_its_session_has_ended(user, settings):
    """The admitting statement itself, with no worker running: a session's next message
    is not admitted while an earlier one is unfinished, however high its priority and
    however much room the window has; another session's message is. Once the earlier
    one has ended, the next admission takes it."""
    settings.AGENTOS_USER_MAX_RUNNING = 20
    agent = make_agent(user)
    first = message_send(user=user, agent=agent, message="m1")
    second = message_send(user=user, agent=agent, message="m2", session=first.session, priority="high")
    other = message_send(user=user, agent=agent, message="o1")

    def admitted() -> set[str]:
        return set(Job.objects.filter(enqueued_at__isnull=False).values_list("public_id", flat=True))

    assert admitted() == {first.public_id, other.public_id}
    assert jobs_admit(owner_id=user.pk) == 0
    assert second.public_id not in admitted()

    Job.objects.filter(pk=first.pk).update(status=Job.Status.SUCCEEDED)
    assert jobs_admit(owner_id=user.pk) == 1
    assert admitted() == {first.public_id, second.public_id, other.public_id}


@pytest.mark.parametrize("where", ["user", "everyone"])
def test_past_a_queue_cap_a_new_job_is_a_429_that_writes_nothing(api, user, agent, settings, where):
    if where == "user":
        UserQuota.objects.create(user=user, max_queued=2)
    else:
        settings.AGENTOS_MAX_QUEUED = 2
    for i in range(2):  # no worker runs: they stay queued
        assert api.post("/api/v1/agentos/send-message/", {"agent_id": agent.public_id, "message": f"m{i}"},
                        content_type="application/json").status_code == 202
    before = (Job.objects.count(), ChatMessage.objects.count(), ChatSession.objects.count())

    refused = api.post("/api/v1/agentos/send-message/", {"agent_id": agent.public_id, "message": "one more"},
                       content_type="application/json")

    assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_full"
    assert int(refused["Retry-After"]) > 0
    assert (Job.objects.count(), ChatMessage.objects.count(), ChatSession.objects.count()) == before


def test_staff_see_the_queue_depth_per_user(api, user, agent, settings):
    staff = make_user("root", is_staff=True)
    for i in range(3):
        message_send(user=user, agent=agent, message=f"m{i}")

    as_staff: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Bearer {make_token(staff)}"}
    info = api.get("/api/v1/agentos/info/", **as_staff).json()
    mine = api.get("/api/v1/agentos/info/").json()

    assert info["queue"]["queued"] == 3 and info["queue"]["oldest_queued_seconds"] >= 0
    assert {"username": "alice", "queued": 3, "running": 0} in info["queue"]["users"]
    assert "queue" not in mine or mine["queue"] is None


def test_the_staff_dashboard_shows_queued_and_running_per_user(client, user, agent):
    staff = make_user("root", is_staff=True)
    for i in range(2):
        message_send(user=user, agent=agent, message=f"m{i}")
    client.force_login(staff)

    page = client.get("/agentos/").content.decode()

    assert "2 queued, 0 running" in page and "<td>alice</td><td>2</td><td>0</td>" in page
