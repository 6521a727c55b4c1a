"""The worker path, called directly: claim, run, fenced finish, per-session order."""
from __future__ import annotations

import json

import pytest

from apps.agents.services import agent_update
from apps.chat.models import ChatMessage
from apps.jobs.lifecycle import job_claim, job_fail, job_succeed_message
from apps.jobs.models import Job
from apps.jobs.services import message_send
from apps.jobs.sweeper import jobs_sweep
from workers.execution import execute_message_job
from workers.pool import AgentPool

pytestmark = pytest.mark.django_db


def accept(user, agent, text, session=None):
    return message_send(user=user, agent=agent, message=text, session=session)


def test_a_message_job_writes_one_reply_and_succeeds(user, agent):
    job = accept(user, agent, "Hello there")

    assert execute_message_job(job.pk) == "succeeded"

    job.refresh_from_db()
    reply = ChatMessage.objects.get(job=job, role="assistant")
    assert job.status == "succeeded" and job.attempts == 1 and job.finished_at is not None
    assert reply.content == "Echo #1: Hello there"
    assert job.result["message_id"] == reply.public_id and job.result["content"] == reply.content
    assert job.result["metrics"]["total_tokens"] > 0 and job.result["metrics"]["provider"] == "local"


def test_a_tool_call_is_run_and_recorded_with_the_reply(user, agent):
    job = accept(user, agent, "/tool calculator (2+3)*4")

    execute_message_job(job.pk)

    reply = ChatMessage.objects.get(job=job, role="assistant")
    assert reply.content == "calculator returned: 20"
    [call] = reply.tool_calls
    assert call["name"] == "calculator" and call["arguments"] == {"expression": "(2+3)*4"}
    assert call["result"] == "20" and call["error"] is False and call["duration_ms"] >= 0


def test_a_tool_the_agent_lacks_is_not_called(user, agent):
    job = accept(user, agent, "/tool current_time Europe/Paris")

    execute_message_job(job.pk)

    assert ChatMessage.objects.get(job=job, role="assistant").tool_calls == []


def test_a_failing_provider_fails_the_job_with_no_reply(user, agent):
    job = accept(user, agent, "/fail upstream is down")

    assert execute_message_job(job.pk) == "failed"

    job.refresh_from_db()
    assert job.status == "failed" and job.error_code == "model_error"
    assert "upstream is down" in job.error_message
    assert not ChatMessage.objects.filter(job=job, role="assistant").exists()


def test_a_task_delivered_twice_writes_one_reply(user, agent):
    job = accept(user, agent, "once")

    outcomes = [execute_message_job(job.pk), execute_message_job(job.pk)]

    assert outcomes == ["succeeded", "skipped"]
    assert ChatMessage.objects.filter(job=job, role="assistant").count() == 1


def test_every_kind_runs_once_and_a_failure_its_body_reports_ends_it_failed(user, agent):
    from apps.jobs.services import sync_job_create
    from apps.knowledge.services import document_upload, vault_for
    from workers.knowledge import execute_ingest_job
    from workers.sync import execute_sync_job

    sync = sync_job_create(user=user, agent_id=agent.public_id, dry_run=True)
    document, _ = document_upload(user=user, kb=vault_for(user=user), name="gone.txt", data=b"soon deleted")
    document.delete()  # the ingest body finds no document: a final failure, not a retry

    assert [execute_sync_job(sync.pk), execute_sync_job(sync.pk)] == ["succeeded", "skipped"]
    assert [execute_ingest_job(document.job_id), execute_ingest_job(document.job_id)] == ["failed", "skipped"]
    ingest = Job.objects.get(pk=document.job_id)
    assert (ingest.status, ingest.error_code, ingest.attempts) == ("failed", "document_deleted", 1)
    assert Job.objects.get(pk=sync.pk).result["dry_run"] is True


def test_claim_is_exclusive(user, agent):
    job = accept(user, agent, "mine")

    first = job_claim(job_id=job.pk, worker="w1")
    second = job_claim(job_id=job.pk, worker="w2")

    assert first is not None and second is None


def test_an_attempt_that_lost_its_lease_cannot_write(user, agent):
    job = accept(user, agent, "slow")
    stale = job_claim(job_id=job.pk, worker="w1")
    Job.objects.filter(pk=job.pk).update(lease_expires_at="2000-01-01T00:00Z")  # w1 looks dead
    fresh = job_claim(job_id=job.pk, worker="w2")

    assert job_succeed_message(job=stale, content="late", tool_calls=[], metrics={}) is None
    assert job_fail(job=stale, code="x", message="late") is False
    assert job_succeed_message(job=fresh, content="on time", tool_calls=[], metrics={}) is not None
    assert list(ChatMessage.objects.filter(job=job, role="assistant").values_list("content", flat=True)) == [
        "on time"]
    assert Job.objects.get(pk=job.pk).attempts == 2


def test_the_second_message_of_a_session_waits_for_the_first(user, agent):
    first = accept(user, agent, "one")
    second = accept(user, agent, "two", session=first.session)

    assert job_claim(job_id=second.pk, worker="w") is None
    execute_message_job(first.pk)
    execute_message_job(second.pk)

    replies = ChatMessage.objects.filter(session=first.session, role="assistant").order_by("id")
    assert [r.content for r in replies] == ["Echo #1: one", "Echo #2: two"]


def test_history_is_the_sessions_messages_in_order(user, agent):
    first = accept(user, agent, "alpha")
    execute_message_job(first.pk)
    second = accept(user, agent, "beta", session=first.session)
    execute_message_job(second.pk)
    third = accept(user, agent, "gamma", session=first.session)

    execute_message_job(third.pk)

    contents = list(ChatMessage.objects.filter(session=first.session).values_list("role", "content"))
    assert contents == [("user", "alpha"), ("assistant", "Echo #1: alpha"), ("user", "beta"),
                        ("assistant", "Echo #2: beta"), ("user", "gamma"), ("assistant", "Echo #3: gamma")]


def test_a_runs_history_leaves_out_failed_and_cancelled_turns_and_later_messages(user, agent):
    from apps.chat.selectors import run_history, session_messages
    from apps.jobs.services import job_cancel_request

    first = accept(user, agent, "alpha")
    execute_message_job(first.pk)
    failed = accept(user, agent, "/fail upstream", session=first.session)
    execute_message_job(failed.pk)
    cancelled = accept(user, agent, "never mind", session=first.session)
    job_cancel_request(job=cancelled)
    current = accept(user, agent, "beta", session=first.session)
    accept(user, agent, "later", session=first.session)  # accepted after: not this run's input

    history = run_history(session_id=first.session_id, job_id=current.pk)

    assert history == [("user", "alpha"), ("assistant", "Echo #1: alpha"), ("user", "beta")]
    assert history == list(session_messages(session=first.session_id, through_job_id=current.pk)
                           .values_list("role", "content"))


def test_a_job_whose_worker_died_every_time_ends_failed(user, agent, settings):
    settings.AGENTOS_MAX_ATTEMPTS = 2
    job = accept(user, agent, "doomed")
    for _ in range(2):
        assert job_claim(job_id=job.pk, worker="w") is not None
        Job.objects.filter(pk=job.pk).update(lease_expires_at="2000-01-01T00:00Z")

    assert execute_message_job(job.pk) == "skipped"

    job.refresh_from_db()
    assert job.status == "failed" and job.error_code == "attempts_exhausted"


def test_a_job_of_a_disabled_agent_fails_cleanly(user, agent):
    job = accept(user, agent, "hi")
    agent_update(agent=agent, enabled=False)

    assert execute_message_job(job.pk) == "failed"
    assert Job.objects.get(pk=job.pk).error_code == "agent_unavailable"


def test_sweeper_resends_jobs_whose_message_was_lost(user, agent, settings, monkeypatch):
    settings.AGENTOS_USER_MAX_RUNNING = 0  # first come, first served: every job is published when sent
    sent = []
    monkeypatch.setattr("apps.jobs.sweeper.job_dispatch",
                        lambda *, job_id, kind, **_: sent.append(job_id) or True)
    lost = accept(user, agent, "lost in redis")
    Job.objects.filter(pk=lost.pk).update(created_at="2000-01-01T00:00Z", enqueued_at=None)
    waiting = accept(user, agent, "behind it", session=lost.session)
    Job.objects.filter(pk=waiting.pk).update(created_at="2000-01-01T00:00Z", enqueued_at=None)
    accept(user, agent, "fresh")

    jobs_sweep()

    assert sent == [lost.pk], "only the head of a session is re-sent; fresh jobs are left alone"


def test_under_fair_sharing_the_sweeper_admits_what_waits_and_never_bypasses_the_window(user, agent, settings):
    """A message job never published is waiting for its user's window: the sweeper admits
    (as an ending would have, had the process not died after its commit), in the window's order."""
    from apps.accounts.models import UserQuota

    settings.AGENTOS_USER_MAX_RUNNING = 20
    UserQuota.objects.create(user=user, max_running=2)
    old = [accept(user, agent, f"old {i}") for i in range(4)]
    behind = accept(user, agent, "behind the first", session=old[0].session)
    Job.objects.filter(pk__in=[j.pk for j in [*old, behind]]).update(created_at="2000-01-01T00:00Z")

    jobs_sweep()

    admitted = set(Job.objects.filter(enqueued_at__isnull=False).values_list("pk", flat=True))
    assert admitted == {old[0].pk, old[1].pk}, "two (the window), oldest first; the session's second waits"


def test_pool_reuses_parts_until_the_agent_changes(user, agent):
    pool = AgentPool(capacity=8)

    first = pool.parts_for(agent)
    again = pool.parts_for(agent)
    edited = agent_update(agent=agent, instructions="Changed.")
    rebuilt = pool.parts_for(edited)

    assert first is again and rebuilt is not first
    assert rebuilt.instructions == "Changed."
    assert pool.snapshot()["size"] == 1
    stats = pool.snapshot()
    assert (stats["hits"], stats["misses"], stats["builds"], stats["evictions"]) == (1, 2, 2, 1)


def test_pool_is_bounded(user):
    from tests.factories import make_agent

    pool = AgentPool(capacity=2)
    for index in range(4):
        pool.parts_for(make_agent(user, name=f"a{index}"))

    assert pool.snapshot()["size"] == 2 and pool.stats.evictions == 2


def test_every_run_gets_its_own_agno_agent_over_shared_parts(user, agent):
    pool = AgentPool(capacity=8)

    one = pool.checkout(agent, user=user, session_id="s1")
    two = pool.checkout(agent, user=user, session_id="s2")

    assert one is not two and one.model is two.model
    assert one.id == agent.public_id and one.telemetry is False


def test_warm_parts_know_the_agents_knowledge_bases_for_its_version(user, agent):
    from apps.knowledge.services import kb_attach, kb_create, kb_detach

    pool = AgentPool(capacity=8)
    kb = kb_create(user=user, name="Handbook")
    assert pool.parts_for(agent).knowledge_ids == ()

    kb_attach(user=user, kb=kb, agent=agent)
    agent.refresh_from_db()
    assert pool.parts_for(agent).knowledge_ids == (kb.pk,), "attaching bumps the version: the parts are rebuilt"

    kb_detach(kb=kb, agent=agent)
    agent.refresh_from_db()
    assert pool.parts_for(agent).knowledge_ids == ()


def test_a_finished_run_waits_out_a_busy_database_instead_of_being_run_again(transactional_db, user, agent):
    """Its ending could not get a connection twice (every pooled one busy): it is written on the
    third try, under the same lease, and the job is not left for the sweeper to run again."""
    from django.db import OperationalError

    from workers.watcher import until_written

    job = accept(user, agent, "hi")
    claimed = job_claim(job_id=job.pk, worker="w")
    tries = []

    def ending():
        tries.append(1)
        if len(tries) < 3:
            raise OperationalError("couldn't get a connection after 10.00 sec")
        return job_succeed_message(job=claimed, content="Echo #1: hi", tool_calls=[], metrics={})

    reply = until_written(ending, within=10)

    job.refresh_from_db()
    assert len(tries) == 3 and reply is not None
    assert job.status == Job.Status.SUCCEEDED and job.attempts == 1
    with pytest.raises(OperationalError):  # a database that stays away is not waited on forever
        until_written(lambda: (_ for _ in ()).throw(OperationalError("down")), within=0.3)


def test_the_lease_watcher_renews_while_every_pooled_connection_is_busy(transactional_db):
    """The watcher thread's connection is its own, outside the pool: it does not queue
    behind the runs whose leases it keeps alive."""
    import threading

    from django.db import connections

    from workers.watcher import own_connection

    base = connections["default"].settings_dict
    pooled = {**base, "OPTIONS": {**base["OPTIONS"], "pool": {"min_size": 1, "max_size": 1, "timeout": 0.5}}}
    results: dict[str, object] = {}
    held, release = threading.Event(), threading.Event()

    def install_pooled():
        connections["default"] = type(connections["default"])(pooled, "default")

    def hog():  # takes the pool's only connection and keeps it
        install_pooled()
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            held.set()
            release.wait(10)
        connections["default"].close()

    def query(name, own):
        install_pooled()
        if own:
            own_connection()
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT 1")
                results[name] = cursor.fetchone()[0]
        except Exception as exc:
            results[name] = type(exc).__name__
        finally:
            connections["default"].close()

    hogger = threading.Thread(target=hog)
    hogger.start()
    try:
        assert held.wait(10)
        for name, own in (("pooled", False), ("watcher", True)):
            thread = threading.Thread(target=query, args=(name, own))
            thread.start()
            thread.join(10)
    finally:
        release.set()
        hogger.join(10)
        type(connections["default"])(pooled, "default").close_pool()  # the pool is kept per alias, class-wide

    assert results == {"pooled": "OperationalError", "watcher": 1}


def test_a_cancel_that_races_the_end_of_a_run_leaves_nothing_behind_in_agno(user, agent):
    from agno.run.cancel import cancel_run, get_active_runs

    from workers.watcher import watcher

    job = accept(user, agent, "hi")
    with watcher.track(job):
        cancel_run(job.public_id)  # the cancel arrives as the run ends, before agno registered it

    assert job.public_id not in get_active_runs()


# --- streaming ------------------------------------------------------------------------------------------------

def test_the_local_model_streams_a_slow_answer_in_pieces_spread_over_its_latency():
    import time

    from agno.models.message import Message

    from apps.agents.local_model import LocalModel

    started = time.monotonic()
    arrivals = [(chunk.content, time.monotonic() - started) for chunk in
                LocalModel(latency_ms=600).invoke_stream(messages=[Message(role="user", content="hi")])]

    assert "".join(piece for piece, _ in arrivals) == "Echo #1: hi"
    assert len(arrivals) >= 6
    assert arrivals[0][1] < 0.3 and arrivals[-1][1] >= 0.55  # the first piece comes early, the last at the end


class Listener:
    """A real subscriber to a job's pub/sub channel, collecting its `content.delta` texts in a thread."""

    def __init__(self, public_id: str) -> None:
        import threading

        from apps.events.pubsub import channel, client

        self.texts: list[str] = []
        self._done = threading.Event()
        self._pubsub = client().pubsub()
        self._pubsub.subscribe(channel(public_id))
        confirmed = self._pubsub.get_message(timeout=2)
        assert confirmed is not None and confirmed["type"] == "subscribe", "the tests' Redis is up"
        self._thread = threading.Thread(target=self._listen)
        self._thread.start()

    def _listen(self) -> None:
        while not self._done.is_set():
            message = self._pubsub.get_message(timeout=0.05)
            if message is not None and message["type"] == "message":
                payload = json.loads(message["data"])
                if payload.get("type") == "content.delta":
                    self.texts.append(payload["text"])

    def stop(self) -> list[str]:
        self._done.set()
        self._thread.join()
        self._pubsub.close()
        return self.texts


def test_a_slow_run_relays_its_growing_text_to_a_listener_and_still_writes_one_reply(user):
    from apps.events.models import JobEvent
    from tests.factories import make_agent

    job = accept(user, make_agent(user, model_options={"latency_ms": 600}), "one two three four five six")
    listener = Listener(job.public_id)

    assert execute_message_job(job.pk) == "succeeded"

    texts = listener.stop()
    reply = ChatMessage.objects.get(job=job, role="assistant")
    assert reply.content == "Echo #1: one two three four five six"
    assert len(texts) >= 3 and texts[-1] == reply.content
    assert all(later.startswith(earlier) and later != earlier for earlier, later in zip(texts, texts[1:]))
    assert not JobEvent.objects.filter(job=job, type="content.delta").exists()  # deltas are never rows


def test_a_quick_reply_sends_its_listener_no_content_delta(user, agent):
    job = accept(user, agent, "Hello there")
    listener = Listener(job.public_id)

    assert execute_message_job(job.pk) == "succeeded"
    assert listener.stop() == []  # done within one interval: the terminal event carries it, nothing else is sent


def test_a_relay_nobody_listens_to_backs_off_to_about_one_publish_a_second():
    import time

    from workers.streaming import ContentRelay

    def relay_for(seconds: float, listen: bool) -> tuple[ContentRelay, list[str]]:
        relay = ContentRelay(f"job-relay-{listen}", interval_ms=50)
        listener = Listener(relay.public_id) if listen else None
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            relay.add("word ")
            time.sleep(0.01)
        relay.flush()
        return relay, listener.stop() if listener else []

    watched, heard = relay_for(1.6, listen=True)
    unwatched, _ = relay_for(1.6, listen=False)

    assert watched.published >= 20 and len(heard) == watched.published  # every 50 ms while someone listens
    assert unwatched.published <= 5  # 50, 100, 200, 400, 800 ms apart once nobody did


def test_a_relay_whose_redis_is_down_stops_trying_and_the_run_succeeds(user, settings, caplog):
    from tests.factories import make_agent

    job = accept(user, make_agent(user, model_options={"latency_ms": 400}), "one two three four five six")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    assert execute_message_job(job.pk) == "succeeded"
    failed = [r for r in caplog.records if "content delta not published" in r.getMessage()]
    assert len(failed) == 1  # one failed publish per job at most, not one timeout per chunk
