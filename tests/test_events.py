"""Job events: the recorded sequence, long-poll wait, and Server-Sent Events over real HTTP."""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Iterator

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, transaction

from apps.common import DomainError
from apps.events.models import JobEvent
from apps.events.services import job_event_append, job_events_since, job_status_changed
from apps.events.waiting import job_wait
from apps.jobs.models import Job
from apps.jobs.services import message_send
from tests.factories import make_agent
from workers.execution import execute_message_job

TERMINAL = ("succeeded", "failed", "cancelled", "expired")


def accept(user: Any, agent: Any, text: str = "Hello") -> Job:
    return message_send(user=user, agent=agent, message=text)


def types_of(job: Job) -> list[str]:
    return [event.type for event in job_events_since(job=job, after_seq=0)]


def in_thread(target: Callable[..., Any], *args: Any) -> threading.Thread:
    """Run `target` on its own thread and database connection, as a worker would."""
    def run() -> None:
        try:
            target(*args)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def sse(response: Any) -> Iterator[dict[str, str]]:
    """Parse a text/event-stream as it arrives: events as {"id", "event", "data"}, comments as {"comment"}."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "event" in fields:
                yield fields
            fields = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
    if "event" in fields:
        yield fields


def events_of_live(response: Any) -> Iterator[dict[str, str]]:
    return (item for item in sse(response) if "event" in item)


def events_of(response: Any) -> list[dict[str, str]]:
    return list(events_of_live(response))


# --- the recorded sequence -------------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_run_records_queued_running_succeeded_in_order(user, agent):
    job = accept(user, agent, "Hello there")

    execute_message_job(job.pk)

    events = job_events_since(job=job, after_seq=0)
    assert [(e.seq, e.type) for e in events] == [(1, "job.queued"), (2, "job.running"), (3, "job.succeeded")]
    assert [e.data["status"] for e in events] == ["queued", "running", "succeeded"]
    assert events[2].data["job_id"] == job.public_id
    assert events[2].data["result"]["content"] == "Echo #1: Hello there"


@pytest.mark.django_db
def test_a_failed_run_ends_its_events_with_job_failed(user, agent):
    job = accept(user, agent, "/fail upstream is down")

    execute_message_job(job.pk)

    assert types_of(job) == ["job.queued", "job.running", "job.failed"]
    assert job_events_since(job=job, after_seq=2)[0].data["error"]["code"] == "model_error"


@pytest.mark.django_db
def test_every_kind_of_job_starts_with_the_same_queued_event(user, agent):
    from apps.jobs.services import sync_job_create
    from apps.knowledge.services import document_upload, vault_for

    message = accept(user, agent)
    sync = sync_job_create(user=user, agent_id=agent.public_id)
    document, _ = document_upload(user=user, kb=vault_for(user=user), name="notes.txt", data=b"some notes")

    for job in (message, sync, document.job):
        [first] = job_events_since(job=job, after_seq=0)
        stored = Job.objects.get(pk=job.pk)
        assert (first.seq, first.type, stored.event_seq) == (1, "job.queued", 1), job.kind
        assert first.data["kind"] == job.kind and first.data["status"] == "queued"
        # written as published (a failed publish clears it for the sweeper), except a message job
        # under fair sharing: it waits for its user's admission window (apps.jobs.dispatch)
        assert (stored.enqueued_at is None) == (job.kind == "message"), job.kind


@pytest.mark.django_db
def test_events_since_returns_only_the_later_ones(user, agent):
    job = accept(user, agent)
    execute_message_job(job.pk)

    assert [e.seq for e in job_events_since(job=job, after_seq=1)] == [2, 3]
    assert job_events_since(job=job, after_seq=3) == []


@pytest.mark.django_db
def test_a_refused_message_records_no_event(user, agent):
    with pytest.raises(DomainError):
        accept(user, agent, "")

    assert JobEvent.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_seq_is_gapless_when_many_threads_append_at_once(user, agent):
    job = accept(user, agent)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING)
    job.refresh_from_db()

    def append_five(n: int) -> None:
        for i in range(5):
            job_event_append(job=job, type="content.delta", data={"thread": n, "i": i})

    threads = [in_thread(append_five, n) for n in range(8)]
    for thread in threads:
        thread.join(30)

    seqs = list(JobEvent.objects.filter(job=job).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, 42))
    assert types_of(job).count("content.delta") == 40


@pytest.mark.django_db
def test_progress_events_of_an_ended_job_are_dropped(user, agent):
    job = accept(user, agent)
    execute_message_job(job.pk)

    job_event_append(job=job, type="content.delta", data={"text": "late"})

    assert types_of(job) == ["job.queued", "job.running", "job.succeeded"]


@pytest.mark.django_db
def test_progress_event_data_is_stored_as_json(user, agent):
    job = accept(user, agent)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING)

    job_event_append(job=job, type="tool_call.started", data={"name": "calculator", "when": object()})

    event = JobEvent.objects.get(job=job, type="tool_call.started")
    assert event.seq == 2 and event.data["name"] == "calculator" and isinstance(event.data["when"], str)


@pytest.mark.django_db
def test_a_status_type_cannot_be_appended_as_progress(user, agent):
    job = accept(user, agent)

    with pytest.raises(ValueError):
        job_event_append(job=job, type="job.succeeded", data={})


@pytest.mark.django_db
def test_a_transition_the_row_has_already_moved_past_is_not_recorded(user, agent):
    job = accept(user, agent)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.CANCELLED)  # a cancel got in after a claim
    job.status = Job.Status.RUNNING

    job_status_changed(job=job)

    assert types_of(job) == ["job.queued"]


# --- long-poll wait ----------------------------------------------------------------------------------------

@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_wait_returns_as_soon_as_a_worker_finishes_the_job(http, start_worker, user, settings):
    settings.AGENTOS_EVENTS_RECHECK_SECONDS = 30  # the answer must come from pub/sub, not a re-check
    start_worker()
    agent = make_agent(user, model_options={"latency_ms": 1000})
    accepted = http.post("send-message/", json={"agent_id": agent.public_id, "message": "slow"}).json()

    started = time.monotonic()
    response = http.get(f"jobs/{accepted['job_id']}/wait/", params={"timeout": 20})
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.json()["status"] == "succeeded"
    assert response.json()["result"]["content"] == "Echo #1: slow"
    assert 0.5 < elapsed < 6, elapsed


@pytest.mark.django_db
def test_wait_answers_the_current_status_after_the_timeout(api, user, agent):
    job = accept(user, agent)

    started = time.monotonic()
    response = api.get(f"/api/v1/agentos/jobs/{job.public_id}/wait/?timeout=1")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.json()["status"] in ("queued", "running")
    assert response.json()["job_id"] == job.public_id
    assert 0.9 < elapsed < 3, elapsed


@pytest.mark.django_db
def test_wait_on_an_ended_job_answers_at_once(api, user, agent):
    job = accept(user, agent)
    execute_message_job(job.pk)

    started = time.monotonic()
    response = api.get(f"/api/v1/agentos/jobs/{job.public_id}/wait/")

    assert response.status_code == 200 and response.json()["status"] == "succeeded"
    assert time.monotonic() - started < 0.5


@pytest.mark.django_db(transaction=True)
def test_wait_notices_an_ending_whose_publish_was_lost(user, agent, settings):
    settings.AGENTOS_EVENTS_RECHECK_SECONDS = 0.2
    job = accept(user, agent)

    def end_silently() -> None:  # no event, no publish: as if Redis lost the message
        time.sleep(0.3)
        Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED)

    in_thread(end_silently)
    started = time.monotonic()
    async_to_sync(job_wait)(public_id=job.public_id, timeout=10)

    assert 0.25 < time.monotonic() - started < 2


@pytest.mark.django_db(transaction=True)
def test_events_are_recorded_and_waits_end_when_redis_is_unreachable(user, agent, settings, tmp_path):
    settings.REDIS_URL = f"unix://{tmp_path}/no-redis.sock?db=0"
    settings.AGENTOS_EVENTS_RECHECK_SECONDS = 0.2
    job = accept(user, agent)  # its publish after commit fails quietly

    in_thread(execute_message_job, job.pk)
    started = time.monotonic()
    async_to_sync(job_wait)(public_id=job.public_id, timeout=10)

    assert time.monotonic() - started < 3
    assert types_of(job) == ["job.queued", "job.running", "job.succeeded"]


@pytest.mark.django_db
@pytest.mark.parametrize("timeout", ["0", "-1", "61", "abc", "nan", "inf"])
def test_a_bad_wait_timeout_is_refused(api, user, agent, timeout):
    job = accept(user, agent)

    response = api.get(f"/api/v1/agentos/jobs/{job.public_id}/wait/?timeout={timeout}")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_input"


@pytest.mark.django_db
def test_another_users_job_is_not_found_for_wait_and_events(api, other_user):
    job = accept(other_user, make_agent(other_user))

    for path in ("wait/?timeout=1", "events/"):
        response = api.get(f"/api/v1/agentos/jobs/{job.public_id}/{path}")
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "job_not_found"


# --- Server-Sent Events over real HTTP ----------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_the_event_stream_follows_a_job_live_and_ends(http, user, agent, settings):
    settings.AGENTOS_EVENTS_RECHECK_SECONDS = 30  # live events must come through pub/sub
    job = accept(user, agent, "Stream me")
    received = []
    started = time.monotonic()

    with http.stream("GET", f"jobs/{job.public_id}/events/") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        for event in events_of_live(response):
            received.append(event)
            if event["event"] == "job.queued":
                in_thread(execute_message_job, job.pk)

    assert [(e["id"], e["event"]) for e in received] == [
        ("1", "job.queued"), ("2", "job.running"), ("3", "job.succeeded")]
    final = json.loads(received[-1]["data"])
    assert final["status"] == "succeeded" and final["result"]["content"] == "Echo #1: Stream me"
    assert time.monotonic() - started < 10



@pytest.mark.django_db(transaction=True)
def test_progress_events_stream_between_the_status_events(http, user, agent):
    job = accept(user, agent)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING)
    job.refresh_from_db()
    job_event_append(job=job, type="tool_call.started", data={"name": "calculator"})

    def finish() -> None:
        job_event_append(job=job, type="content.delta", data={"text": "4"})
        with transaction.atomic():
            Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED)
            job_status_changed(job=Job.objects.get(pk=job.pk))

    received = []
    with http.stream("GET", f"jobs/{job.public_id}/events/") as response:
        for event in events_of_live(response):
            received.append(event)
            if event["event"] == "tool_call.started":
                in_thread(finish)

    assert [(e["id"], e["event"]) for e in received] == [
        ("1", "job.queued"), ("2", "tool_call.started"), ("3", "content.delta"), ("4", "job.succeeded")]
    assert json.loads(received[2]["data"]) == {"text": "4"}


@pytest.mark.django_db(transaction=True)
def test_a_reconnect_with_last_event_id_resumes_without_repeats(http, user, agent):
    job = accept(user, agent)
    with http.stream("GET", f"jobs/{job.public_id}/events/") as response:
        first = next(events_of_live(response))  # then the client drops the connection

    in_thread(execute_message_job, job.pk)
    with http.stream("GET", f"jobs/{job.public_id}/events/", headers={"Last-Event-ID": first["id"]}) as response:
        resumed = events_of(response)

    assert (first["id"], first["event"]) == ("1", "job.queued")
    assert [(e["id"], e["event"]) for e in resumed] == [("2", "job.running"), ("3", "job.succeeded")]


@pytest.mark.django_db(transaction=True)
def test_connecting_after_the_end_replays_the_events_at_once(http, user, agent):
    job = accept(user, agent)
    execute_message_job(job.pk)

    started = time.monotonic()
    with http.stream("GET", f"jobs/{job.public_id}/events/") as response:
        everything = events_of(response)
    with http.stream("GET", f"jobs/{job.public_id}/events/", params={"last_event_id": "2"}) as response:
        last_only = events_of(response)

    assert [e["event"] for e in everything] == ["job.queued", "job.running", "job.succeeded"]
    assert [(e["id"], e["event"]) for e in last_only] == [("3", "job.succeeded")]
    assert time.monotonic() - started < 2


@pytest.mark.django_db(transaction=True)
def test_a_client_with_every_event_of_an_ended_job_is_told_to_stop(http, user, agent):
    job = accept(user, agent)
    execute_message_job(job.pk)

    response = http.get(f"jobs/{job.public_id}/events/", headers={"Last-Event-ID": "3"})

    assert response.status_code == 204  # EventSource does not reconnect after a 204


@pytest.mark.django_db(transaction=True)
def test_an_idle_stream_sends_keepalives_and_ends_at_its_time_limit(http, user, agent, settings):
    settings.AGENTOS_SSE_KEEPALIVE_SECONDS = 0.2
    settings.AGENTOS_SSE_MAX_SECONDS = 1
    job = accept(user, agent)  # nobody runs it

    started = time.monotonic()
    with http.stream("GET", f"jobs/{job.public_id}/events/") as response:
        items = list(sse(response))
    elapsed = time.monotonic() - started

    assert [item["event"] for item in items if "event" in item] == ["job.queued"]
    assert sum(1 for item in items if item.get("comment") == "keepalive") >= 3
    assert 0.9 < elapsed < 3, elapsed


@pytest.mark.django_db
@pytest.mark.parametrize("last_event_id", ["abc", "-1", "1.5"])
def test_a_bad_last_event_id_is_refused(api, user, agent, last_event_id):
    job = accept(user, agent)

    response = api.get(f"/api/v1/agentos/jobs/{job.public_id}/events/", HTTP_LAST_EVENT_ID=last_event_id)

    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_input"


@pytest.mark.django_db
def test_wait_and_events_are_in_the_openapi_schema(api):
    paths = api.get("/api/v1/agentos/openapi.json").json()["paths"]

    assert "/api/v1/agentos/jobs/{job_id}/wait/" in paths
    assert "text/event-stream" in paths["/api/v1/agentos/jobs/{job_id}/events/"]["get"]["responses"]["200"]["content"]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_slow_reply_streams_growing_content_deltas_before_the_terminal_event(http, start_worker, user, settings):
    settings.AGENTOS_EVENTS_RECHECK_SECONDS = 30  # everything must come through pub/sub
    start_worker()
    agent = make_agent(user, model_options={"latency_ms": 1500})
    message = "please stream this reply to me one word at a time"
    accepted = http.post("send-message/", json={"agent_id": agent.public_id, "message": message}).json()

    with http.stream("GET", f"jobs/{accepted['job_id']}/events/") as response:
        received = events_of(response)

    stored = [(e.get("id"), e["event"]) for e in received if e["event"] != "content.delta"]
    deltas = [e for e in received if e["event"] == "content.delta"]
    texts = [json.loads(e["data"])["text"] for e in deltas]
    reply = json.loads(received[-1]["data"])["result"]["content"]
    assert stored == [("1", "job.queued"), ("2", "job.running"), ("3", "job.succeeded")]
    assert received[-1]["event"] == "job.succeeded"  # every delta came before the terminal event
    assert len(texts) >= 3, texts
    assert all(later.startswith(earlier) and len(later) > len(earlier) for earlier, later in zip(texts, texts[1:]))
    assert texts[-1] == reply == f"Echo #1: {message}"
    assert all("id" not in e for e in deltas)  # a delta leaves the client's Last-Event-ID alone
    assert not JobEvent.objects.filter(job__public_id=accepted["job_id"], type="content.delta").exists()


# --- the process's hub -----------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_the_hub_rechecks_every_followed_job_in_one_query_and_wakes_only_the_ones_that_ended(
        user, agent, settings, tmp_path):
    import asyncio
    import contextlib
    from concurrent.futures import ThreadPoolExecutor

    from asgiref.sync import sync_to_async

    from apps.events.hub import Hub

    settings.REDIS_URL = f"unix://{tmp_path}/no-redis.sock?db=0"  # nothing but the re-checks wakes anyone
    settings.AGENTOS_EVENTS_RECHECK_SECONDS = 0.2
    jobs = [accept(user, agent, f"message {i}") for i in range(20)]
    statements: list[tuple[float, str]] = []

    def count(execute, sql, params, many, context):
        statements.append((time.monotonic(), sql))
        return execute(sql, params, many, context)

    # the hub's queries run on the loop's executor: one thread here, whose statements are counted
    executor = ThreadPoolExecutor(1, initializer=lambda: connection.execute_wrappers.append(count))

    async def scenario() -> tuple[float, float, list[bool]]:
        asyncio.get_running_loop().set_default_executor(executor)
        hub = Hub()
        async with contextlib.AsyncExitStack() as stack:
            followers = [await stack.enter_async_context(hub.follow(public_id=job.public_id)) for job in jobs]
            await sync_to_async(Job.objects.filter(pk=jobs[3].pk).update)(status=Job.Status.SUCCEEDED)
            started = time.monotonic()
            woke = await followers[3].changed(5)
            await asyncio.sleep(0.5)  # a few more re-check periods
            periods = (time.monotonic() - started) / settings.AGENTOS_EVENTS_RECHECK_SECONDS
            result = [follower.ended for follower in followers]
        # that thread's connection, before the test database goes (asyncio.run then shuts the executor down)
        await asyncio.get_running_loop().run_in_executor(None, lambda: connection.close())
        assert woke
        return started, periods, result

    started, periods, ended = asyncio.run(scenario())

    assert ended == [i == 3 for i in range(20)]
    assert all("ANY(" in sql and "jobs_job" in sql for _, sql in statements)  # the re-check, nothing else
    since = [at for at, _ in statements if at >= started]
    assert 1 <= len(since) <= periods + 2  # one per period for all 20 followers, not one per follower
