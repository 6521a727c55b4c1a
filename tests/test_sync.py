"""Agent sync: the command with each flag, the staff API, beat's schedule and its lock."""
from __future__ import annotations

import io
import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.agents.models import Agent
from apps.agents.sync import sync_lock
from tests.conftest import wait_for_job
from tests.factories import make_agent, make_token, make_user
from workers.sync import periodic_sync


def run_sync_with_progress(*args: str) -> tuple[str, str]:
    """The command's report (stdout) and its progress output (stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("agentos_sync", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def run_sync(*args: str) -> str:
    return run_sync_with_progress(*args)[0]


@pytest.mark.django_db
def test_inline_sync_marks_agents_ok_and_records_their_configuration(user, agent):
    output = run_sync("--inline")

    agent.refresh_from_db()
    assert agent.sync_status == "ok" and agent.synced_at is not None and agent.config_hash
    assert agent.public_id in output and "ok 1" in output


@pytest.mark.django_db
def test_a_sync_over_several_agents_shows_its_progress_on_stderr(user):
    for i in range(4):
        make_agent(user, name=f"a{i}")

    output, progress = run_sync_with_progress("--inline")

    assert "syncing agents" in progress and "4/4" in progress
    assert "syncing agents" not in output, "the report stays clean for a pipe"


@pytest.mark.django_db
def test_a_broken_agent_is_marked_invalid_with_the_reason(user):
    broken = make_agent(user, model_provider="openai_like", model_id="m", tools=[],
                        model_options={"base_url": "http://127.0.0.1:9/v1"})
    retired_tool = make_agent(user, name="retired")
    Agent.objects.filter(pk=retired_tool.pk).update(tools=["vanished_tool"])

    with pytest.raises(CommandError, match="invalid"):
        run_sync("--inline")

    broken.refresh_from_db()
    retired_tool.refresh_from_db()
    assert broken.sync_status == "invalid" and broken.sync_error.startswith("provider_unreachable")
    assert retired_tool.sync_status == "invalid" and "unknown_tool" in retired_tool.sync_error


@pytest.mark.django_db
def test_a_changed_configuration_bumps_the_version_so_pools_rebuild(user, agent):
    run_sync("--inline")
    Agent.objects.filter(pk=agent.pk).update(instructions="Changed behind the API's back.")

    run_sync("--inline")

    agent.refresh_from_db()
    assert agent.version == 2 and agent.sync_status == "ok"
    run_sync("--inline")
    agent.refresh_from_db()
    assert agent.version == 2, "an unchanged configuration keeps its version"


@pytest.mark.django_db
def test_dry_run_reports_what_would_change_and_changes_nothing(user, agent):
    run_sync("--inline")
    Agent.objects.filter(pk=agent.pk).update(instructions="New.")
    before = Agent.objects.values("version", "sync_status", "config_hash", "synced_at").get(pk=agent.pk)

    output = run_sync("--inline", "--dry-run")

    assert Agent.objects.values("version", "sync_status", "config_hash", "synced_at").get(pk=agent.pk) == before
    assert "stale" in output and "dry run" in output


@pytest.mark.django_db
def test_an_agent_whose_knowledge_is_not_current_is_recorded_stale_until_it_is(user, agent):
    from apps.knowledge.ingest import document_failed
    from apps.knowledge.models import Document
    from apps.knowledge.services import document_upload, kb_attach, kb_create

    kb = kb_create(user=user, name="Handbook")
    kb_attach(user=user, kb=kb, agent=agent)
    ready, _ = document_upload(user=user, kb=kb, name="a.txt", data=b"embedded")
    Document.objects.filter(pk=ready.pk).update(status=Document.Status.READY, chunk_count=1)
    waiting, _ = document_upload(user=user, kb=kb, name="b.txt", data=b"still queued")

    output = run_sync("--inline")

    agent.refresh_from_db()
    assert agent.sync_status == "stale" and "stale 1" in output, "buildable, so not invalid"
    assert agent.sync_error == (f"knowledge_stale: {kb.public_id}: "
                                "1 document(s) not embedded yet (pending or processing)")

    document_failed(document=waiting, error="the file is not UTF-8 text")
    run_sync("--inline")
    agent.refresh_from_db()
    assert agent.sync_status == "stale" and "1 document(s) failed to ingest" in agent.sync_error

    waiting.delete()
    run_sync("--inline")
    agent.refresh_from_db()
    assert (agent.sync_status, agent.sync_error) == ("ok", "")


@pytest.mark.django_db
def test_an_unbuildable_agent_stays_invalid_whatever_its_knowledge(user):
    from apps.knowledge.services import document_upload, kb_attach, kb_create

    broken = make_agent(user, name="retired")
    Agent.objects.filter(pk=broken.pk).update(tools=["vanished_tool"])
    kb = kb_create(user=user, name="Handbook")
    kb_attach(user=user, kb=kb, agent=broken)
    document_upload(user=user, kb=kb, name="b.txt", data=b"still queued")

    with pytest.raises(CommandError, match="invalid"):
        run_sync("--inline")

    broken.refresh_from_db()
    assert broken.sync_status == "invalid" and broken.sync_error.startswith("unknown_tool")


@pytest.mark.django_db
def test_user_and_agent_filters_pick_the_agents(user, other_user):
    mine, also_mine, theirs = make_agent(user), make_agent(user, name="Other"), make_agent(other_user)

    run_sync("--inline", "--user-id", str(other_user.pk))

    assert Agent.objects.get(pk=theirs.pk).sync_status == "ok"
    assert Agent.objects.filter(pk__in=[mine.pk, also_mine.pk], synced_at__isnull=False).count() == 0, \
        "an agent outside --user-id is not touched"

    run_sync("--inline", "--agent-id", mine.public_id)

    assert Agent.objects.get(pk=mine.pk).sync_status == "ok"
    assert Agent.objects.get(pk=also_mine.pk).synced_at is None, "nor one outside --agent-id"
    with pytest.raises(CommandError, match="agent_not_found"):
        run_sync("--inline", "--agent-id", "agent-000000000000")


@pytest.mark.django_db(transaction=True)
def test_two_syncs_never_run_at_once(user, agent):
    from django.db import connection

    held, release = threading.Event(), threading.Event()

    def hold_lock():
        with sync_lock():
            held.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    held.wait(5)
    try:
        assert periodic_sync() is None, "the second sync stands down"
        with pytest.raises(CommandError, match="sync_in_progress"):
            run_sync("--inline")
    finally:
        release.set()
        holder.join()
    assert periodic_sync() == {"total": 1, "ok": 1, "invalid": 0, "stale": 0, "changed": 0}


def test_every_beat_entry_points_at_a_registered_task(settings):
    from celery_app import app

    app.loader.import_default_modules()
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        assert entry["task"] in app.tasks, name
    assert "opie-agent-sync" in settings.CELERY_BEAT_SCHEDULE


@pytest.mark.django_db(transaction=True)  # Celery's Django fixup closes the connection as beat starts
def test_an_admin_edit_of_the_sync_interval_survives_a_beat_restart(settings):
    from django.utils.module_loading import import_string
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from celery_app import app

    scheduler = import_string(settings.CELERY_BEAT_SCHEDULER.replace(":", "."))
    scheduler(app=app)  # beat's first start: the defaults from settings are created
    task = PeriodicTask.objects.get(name="opie-agent-sync")
    assert (task.interval.every, task.interval.period) == (3600, "seconds")
    assert (task.queue, task.expire_seconds) == ("sync", 600)
    task.interval = IntervalSchedule.objects.create(every=15, period=IntervalSchedule.MINUTES)
    task.save()  # what the admin's Periodic tasks page does

    scheduler(app=app)  # beat restarts

    task = PeriodicTask.objects.get(name="opie-agent-sync")
    assert (task.interval.every, task.interval.period) == (15, "minutes")
    assert PeriodicTask.objects.filter(name="opie-sweep-jobs").count() == 1


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_queued_sync_runs_on_a_worker_and_reports_progress(start_worker, user):
    start_worker(queues="sync")
    agents = [make_agent(user, name=f"a{i}") for i in range(3)]

    output, progress = run_sync_with_progress("--timeout", "30")

    assert all(Agent.objects.get(pk=a.pk).sync_status == "ok" for a in agents)
    assert "total 3" in output and "ok 3" in output
    assert "queued on 'sync'" in progress and "syncing agents" in progress and "3/3" in progress


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_staff_start_a_sync_job_over_the_api_and_others_may_not(http, live_server, start_worker, user):
    import httpx

    start_worker(queues="sync")
    make_agent(user)
    staff = make_user("ops", is_staff=True)

    refused = http.post("sync/", json={})
    with httpx.Client(base_url=f"{live_server.url}/api/v1/agentos/",
                      headers={"Authorization": f"Bearer {make_token(staff)}"}) as ops:
        accepted = ops.post("sync/", json={"dry_run": True})
        job = wait_for_job(ops, accepted.json()["job_id"])

    assert refused.status_code == 403 and refused.json()["error"]["code"] == "staff_only"
    assert accepted.status_code == 202 and accepted.json()["kind"] == "sync"
    assert job["status"] == "succeeded" and job["result"]["summary"]["total"] == 1
    assert job["result"]["dry_run"] is True
