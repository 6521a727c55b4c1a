"""User schedules: the API's contract, and firing as the beat tick does it, on a
clock the test sets (the tick with real beat and worker processes is in
tests/test_schedules_beat.py)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from apps.chat.models import ChatSession
from apps.jobs.models import Job
from apps.schedules.models import Schedule, ScheduleRun
from apps.schedules.services import schedule_fire, schedules_fire_due
from tests.factories import make_agent

pytestmark = pytest.mark.django_db
UTC = dt_timezone.utc


def post(api: Any, path: str, body: dict[str, Any] | None = None, **headers: str) -> Any:
    return api.post(f"/api/v1/agentos/{path}", data=json.dumps(body or {}), content_type="application/json",
                    **{f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()})


def patch(api: Any, path: str, body: dict[str, Any]) -> Any:
    return api.patch(f"/api/v1/agentos/{path}", data=json.dumps(body), content_type="application/json")


def get(api: Any, path: str) -> Any:
    return api.get(f"/api/v1/agentos/{path}")


def create(api: Any, agent: Any, **fields: Any) -> dict[str, Any]:
    body = {"agent_id": agent.public_id, "message": "summarise the new documents", "interval_seconds": 900,
            **fields}
    answer = post(api, "schedules/", body)
    assert answer.status_code == 201, answer.content
    return answer.json()


def error_code(answer: Any) -> str:
    return answer.json()["error"]["code"]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- the API ----------------------------------------------------------------------------------

def test_a_weekday_morning_schedule_answers_with_its_next_run_in_its_own_timezone(api, agent):
    created = create(api, agent, interval_seconds=None, cron="0 8 * * 1-5", timezone="Europe/Paris",
                     callback_url="https://hooks.example.com/opie")
    assert created["id"].startswith("sched-")
    assert created["agent_id"] == agent.public_id and created["cron"] == "0 8 * * 1-5"
    assert created["interval_seconds"] is None and created["session"] == "new"
    assert created["enabled"] is True and created["state"] == "active" and created["last_run_at"] is None
    assert created["misfire"] == "run_latest" and created["callback_url"] == "https://hooks.example.com/opie"
    due = at(created["next_run_at"])
    local = due.astimezone(ZoneInfo("Europe/Paris"))
    assert due.utcoffset() == local.utcoffset()  # shown with the Paris offset
    assert (local.hour, local.minute, local.weekday() < 5) == (8, 0, True)
    assert due > timezone.now()
    assert get(api, f"schedules/{created['id']}/").json() == created


def test_an_interval_schedule_first_runs_one_interval_after_it_is_created(api, agent):
    before = timezone.now()
    created = create(api, agent, interval_seconds=600)
    due = at(created["next_run_at"])
    assert before.replace(microsecond=0) + timedelta(seconds=600) <= due <= timezone.now() + timedelta(seconds=600)
    assert due.microsecond == 0  # on a whole second


def test_starts_at_without_an_offset_is_in_the_schedules_timezone(api, agent):
    created = create(api, agent, interval_seconds=3600, timezone="America/New_York",
                     starts_at="2099-01-05T09:00:00")
    assert created["starts_at"] == "2099-01-05T09:00:00-05:00"
    assert created["next_run_at"] == "2099-01-05T09:00:00-05:00"


@pytest.mark.parametrize(("fields", "code"), [
    ({"interval_seconds": None, "cron": "61 * * * *"}, "invalid_cron"),
    ({"interval_seconds": None, "cron": "every day"}, "invalid_cron"),
    ({"interval_seconds": None, "cron": "0 0 31 2 *"}, "invalid_cron"),
    ({"timezone": "Mars/Olympus_Mons"}, "invalid_timezone"),
    ({"timezone": "../../etc/passwd"}, "invalid_timezone"),
    ({"interval_seconds": 59}, "interval_too_short"),
    ({"interval_seconds": 0}, "interval_too_short"),
    ({"interval_seconds": 10**12}, "interval_too_long"),
    ({"interval_seconds": None, "cron": "* * * * *"}, "interval_too_short"),
    ({"interval_seconds": None}, "invalid_schedule"),
    ({"cron": "0 8 * * *"}, "invalid_schedule"),
    ({"misfire": "catch_up"}, "invalid_misfire"),
    ({"message": "   "}, "invalid_input"),
    ({"starts_at": "2099-01-02T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z"}, "invalid_window"),
    ({"ends_at": "2001-01-01T00:00:00Z"}, "invalid_window"),
    ({"callback_url": "ftp://example.com/x"}, "invalid_callback_url"),
])
def test_a_bad_schedule_is_refused_with_a_stable_code_and_nothing_is_written(api, agent, settings, fields, code):
    settings.AGENTOS_SCHEDULE_MIN_INTERVAL = 120 if fields.get("cron") == "* * * * *" else 60
    body = {"agent_id": agent.public_id, "message": "hello", "interval_seconds": 900, **fields}
    answer = post(api, "schedules/", body)
    assert answer.status_code == 400, answer.content
    assert error_code(answer) == code
    assert not Schedule.objects.exists()


def test_a_schedule_of_an_agent_the_user_may_not_use_is_a_404(api, other_user):
    private = make_agent(other_user, name="Not yours")
    answer = post(api, "schedules/", {"agent_id": private.public_id, "message": "hi", "interval_seconds": 900})
    assert (answer.status_code, error_code(answer)) == (404, "agent_not_found")


def test_a_schedule_into_a_session_must_name_one_of_the_users_sessions_of_that_agent(api, agent, user, other_user):
    theirs = ChatSession.objects.create(owner=other_user, agent=make_agent(other_user))
    answer = post(api, "schedules/", {"agent_id": agent.public_id, "message": "hi", "interval_seconds": 900,
                                      "session": theirs.public_id})
    assert (answer.status_code, error_code(answer)) == (404, "session_not_found")
    elsewhere = ChatSession.objects.create(owner=user, agent=make_agent(user, name="Other"))
    answer = post(api, "schedules/", {"agent_id": agent.public_id, "message": "hi", "interval_seconds": 900,
                                      "session": elsewhere.public_id})
    assert (answer.status_code, error_code(answer)) == (409, "session_agent_mismatch")


def test_a_user_keeps_at_most_the_configured_number_of_schedules(api, agent, settings):
    settings.AGENTOS_USER_MAX_SCHEDULES = 2
    create(api, agent)
    create(api, agent)
    answer = post(api, "schedules/", {"agent_id": agent.public_id, "message": "hi", "interval_seconds": 900})
    assert (answer.status_code, error_code(answer)) == (409, "schedule_limit_reached")
    assert Schedule.objects.count() == 2


def test_the_list_pages_newest_first_with_a_cursor_and_filters_by_agent(api, agent, user):
    other_agent = make_agent(user, name="Other")
    ids = [create(api, agent)["id"] for _ in range(3)] + [create(api, other_agent)["id"]]
    first = get(api, "schedules/?limit=2").json()
    second = get(api, f"schedules/?limit=2&cursor={first['next']}").json()
    assert [s["id"] for s in first["schedules"] + second["schedules"]] == ids[::-1]
    assert second["next"] is None
    only = get(api, f"schedules/?agent_id={other_agent.public_id}").json()["schedules"]
    assert [s["id"] for s in only] == [ids[3]]


def test_patch_changes_fields_and_a_timing_change_moves_the_next_run(api, agent):
    created = create(api, agent, interval_seconds=900)
    changed = patch(api, f"schedules/{created['id']}/", {"cron": "30 6 * * *", "timezone": "Asia/Tokyo",
                                                          "message": "new words"})
    assert changed.status_code == 200, changed.content
    body = changed.json()
    assert body["cron"] == "30 6 * * *" and body["interval_seconds"] is None and body["message"] == "new words"
    local = at(body["next_run_at"]).astimezone(ZoneInfo("Asia/Tokyo"))
    assert (local.hour, local.minute) == (6, 30)
    refused = patch(api, f"schedules/{created['id']}/", {"timezone": "Nowhere/Land"})
    assert (refused.status_code, error_code(refused)) == (400, "invalid_timezone")
    assert Schedule.objects.get(public_id=created["id"]).timezone == "Asia/Tokyo"  # nothing half written
    refused = patch(api, f"schedules/{created['id']}/", {"message": None})
    assert (refused.status_code, error_code(refused)) == (400, "invalid_input")


def test_pause_and_resume_set_enabled_and_resume_does_not_catch_up(api, agent):
    created = create(api, agent, interval_seconds=900)
    paused = post(api, f"schedules/{created['id']}/pause/").json()
    assert paused["enabled"] is False and paused["state"] == "paused" and paused["paused_reason"] == "user"
    assert paused["next_run_at"] is None
    Schedule.objects.filter(public_id=created["id"]).update(created_at=timezone.now() - timedelta(days=2))
    resumed = post(api, f"schedules/{created['id']}/resume/").json()
    assert resumed["enabled"] is True and resumed["paused_reason"] is None
    assert at(resumed["next_run_at"]) > timezone.now()  # from now on, not the 2 days of times it missed
    assert schedules_fire_due() == {}
    assert not ScheduleRun.objects.exists()


def test_run_now_answers_like_send_message_and_honours_an_idempotency_key(api, agent):
    created = create(api, agent, interval_seconds=900)
    first = post(api, f"schedules/{created['id']}/run/", **{"Idempotency-Key": "run-1"})
    again = post(api, f"schedules/{created['id']}/run/", **{"Idempotency-Key": "run-1"})
    assert first.status_code == 202, first.content
    body = first.json()
    assert set(body) == {"job_id", "status", "session_id", "poll_url"}
    assert again.status_code == 202 and again.json() == body
    assert Job.objects.filter(kind="message").count() == 1
    job = Job.objects.get(public_id=body["job_id"])
    assert job.session.public_id == body["session_id"] and job.owner.username == "alice"
    assert job.session.messages.get(role="user").content == "summarise the new documents"
    assert get(api, body["poll_url"].removeprefix("/api/v1/agentos/")).status_code == 200
    [run] = get(api, f"schedules/{created['id']}/runs/").json()["runs"]
    assert run["trigger"] == "manual" and run["job_id"] == body["job_id"] and run["status"] == "queued"
    assert get(api, f"schedules/{created['id']}/").json()["next_run_at"] == created["next_run_at"]


def test_delete_removes_the_schedule_but_not_the_jobs_it_made(api, agent):
    created = create(api, agent)
    job_id = post(api, f"schedules/{created['id']}/run/").json()["job_id"]
    assert api.delete(f"/api/v1/agentos/schedules/{created['id']}/").status_code == 204
    assert get(api, f"schedules/{created['id']}/").status_code == 404
    assert Job.objects.filter(public_id=job_id).exists()


def test_another_users_schedule_is_a_404_everywhere(api, other_api, agent):
    sid = create(api, agent)["id"]
    for answer in (get(other_api, f"schedules/{sid}/"), get(other_api, f"schedules/{sid}/runs/"),
                   patch(other_api, f"schedules/{sid}/", {"message": "mine now"}),
                   post(other_api, f"schedules/{sid}/pause/"), post(other_api, f"schedules/{sid}/resume/"),
                   post(other_api, f"schedules/{sid}/run/"),
                   other_api.delete(f"/api/v1/agentos/schedules/{sid}/")):
        assert (answer.status_code, error_code(answer)) == (404, "schedule_not_found")
    assert get(other_api, "schedules/").json()["schedules"] == []
    schedule = Schedule.objects.get(public_id=sid)
    assert schedule.enabled and schedule.message == "summarise the new documents"
    assert not Job.objects.exists()


# --- firing, on the test's clock -------------------------------------------------------------

def due_schedule(api: Any, agent: Any, *, due: datetime, **fields: Any) -> Schedule:
    created = create(api, agent, **fields)
    # created two intervals before its due time, so that time is on the interval's grid
    interval = timedelta(seconds=created["interval_seconds"] or 0)
    Schedule.objects.filter(public_id=created["id"]).update(next_run_at=due, created_at=due - 2 * interval)
    return Schedule.objects.get(public_id=created["id"])


def test_a_due_schedule_fires_one_ordinary_message_job_and_moves_on(api, agent):
    now = timezone.now().replace(microsecond=0)
    schedule = due_schedule(api, agent, due=now - timedelta(seconds=5), interval_seconds=900)
    assert schedules_fire_due(now=now) == {"fired": 1}
    [run] = ScheduleRun.objects.all()
    assert run.due_at == now - timedelta(seconds=5) and run.misfire == "" and run.missed == 0
    job = run.job
    assert job.kind == "message" and job.status == "queued" and job.agent == agent and job.owner == schedule.owner
    assert job.session.messages.get(role="user").content == schedule.message
    schedule.refresh_from_db()
    assert schedule.next_run_at > now and schedule.last_run_at == now
    assert schedules_fire_due(now=now) == {}  # nothing is due twice


def test_firing_a_due_time_twice_writes_one_job(api, agent):
    now = timezone.now().replace(microsecond=0)
    schedule = due_schedule(api, agent, due=now - timedelta(seconds=1), interval_seconds=900)
    stale = Schedule.objects.select_related("owner", "agent", "session").get(pk=schedule.pk)  # read by a 2nd tick
    assert schedules_fire_due(now=now) == {"fired": 1}
    assert schedule_fire(schedule=stale, now=now) == "duplicate"  # the unique (schedule, due time) holds
    assert ScheduleRun.objects.count() == 1 and Job.objects.count() == 1


def test_every_run_of_a_fixed_session_schedule_goes_to_that_session_in_order(api, agent, user):
    session = ChatSession.objects.create(owner=user, agent=agent)
    now = timezone.now().replace(microsecond=0)
    schedule = due_schedule(api, agent, due=now, interval_seconds=900, session=session.public_id)
    schedules_fire_due(now=now)
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=now + timedelta(seconds=900))
    schedules_fire_due(now=now + timedelta(seconds=900))
    jobs = list(Job.objects.order_by("id"))
    assert len(jobs) == 2 and {job.session_id for job in jobs} == {session.pk}


def test_after_downtime_it_fires_once_for_the_most_recent_missed_time(api, agent):
    now = timezone.now().replace(microsecond=0)
    first = now - timedelta(seconds=900 * 10 + 30)  # ten and a bit intervals ago
    schedule = due_schedule(api, agent, due=first, interval_seconds=900)
    assert schedules_fire_due(now=now) == {"fired": 1}
    [run] = ScheduleRun.objects.all()
    assert run.due_at == first + timedelta(seconds=900 * 10) and run.misfire == "run_latest" and run.missed == 10
    assert Job.objects.count() == 1
    schedule.refresh_from_db()
    assert schedule.next_run_at == first + timedelta(seconds=900 * 11)
    answer = get(api, f"schedules/{schedule.public_id}/runs/").json()["runs"][0]
    assert answer["misfire"] == "run_latest" and answer["missed"] == 10 and answer["status"] == "queued"


def test_with_misfire_skip_a_missed_time_is_recorded_and_runs_nothing(api, agent):
    now = timezone.now().replace(microsecond=0)
    first = now - timedelta(seconds=900 * 3 + 300)
    schedule = due_schedule(api, agent, due=first, interval_seconds=900, misfire="skip")
    assert schedules_fire_due(now=now) == {"skipped": 1}
    [run] = ScheduleRun.objects.all()
    assert (run.status, run.misfire, run.missed, run.job) == ("skipped", "skip", 4, None)
    assert not Job.objects.exists()
    schedule.refresh_from_db()
    assert schedule.next_run_at > now and schedule.last_run_at is None
    answer = get(api, f"schedules/{schedule.public_id}/runs/").json()["runs"][0]
    assert answer["status"] == "skipped" and answer["job_id"] is None and answer["misfire"] == "skip"


def test_a_slow_tick_within_the_grace_still_fires_on_time(api, agent, settings):
    settings.AGENTOS_SCHEDULE_MISFIRE_GRACE = 60
    now = timezone.now().replace(microsecond=0)
    due_schedule(api, agent, due=now - timedelta(seconds=40), interval_seconds=900, misfire="skip")
    assert schedules_fire_due(now=now) == {"fired": 1}
    assert ScheduleRun.objects.get().misfire == ""


def test_a_schedule_past_its_end_stops_and_says_ended(api, agent):
    now = timezone.now().replace(microsecond=0)
    schedule = due_schedule(api, agent, due=now, interval_seconds=900, ends_at=(now + timedelta(seconds=1000))
                            .isoformat())
    schedules_fire_due(now=now)
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=now + timedelta(seconds=900))
    schedules_fire_due(now=now + timedelta(seconds=900))
    body = get(api, f"schedules/{schedule.public_id}/").json()
    assert body["state"] == "ended" and body["next_run_at"] is None and body["enabled"] is True
    assert Job.objects.count() == 2


def test_a_schedule_whose_agent_is_deleted_pauses_itself_and_keeps_its_history(api, agent):
    now = timezone.now().replace(microsecond=0)
    schedule = due_schedule(api, agent, due=now, interval_seconds=900)
    schedules_fire_due(now=now)
    agent.delete()
    assert schedules_fire_due(now=now + timedelta(seconds=900)) == {"paused": 1}
    body = get(api, f"schedules/{schedule.public_id}/").json()
    assert body["enabled"] is False and body["paused_reason"] == "agent_deleted" and body["state"] == "paused"
    [run] = get(api, f"schedules/{schedule.public_id}/runs/").json()["runs"]
    assert run["job_id"] is None and run["status"] == "deleted"  # its job went with the agent
    resumed = post(api, f"schedules/{schedule.public_id}/resume/")
    assert (resumed.status_code, error_code(resumed)) == (404, "agent_not_found")


def test_a_schedule_whose_agent_is_disabled_pauses_itself_before_it_is_due(api, agent):
    schedule = due_schedule(api, agent, due=timezone.now() + timedelta(hours=1), interval_seconds=900)
    agent.enabled = False
    agent.save()
    assert schedules_fire_due() == {"paused": 1}
    schedule.refresh_from_db()
    assert (schedule.enabled, schedule.paused_reason) == (False, "agent_disabled")
    run = post(api, f"schedules/{schedule.public_id}/run/")
    assert (run.status_code, error_code(run)) == (409, "schedule_unusable")


def test_a_schedule_pauses_itself_when_its_owner_loses_access_to_a_shared_agent(api, user, other_user):
    shared = make_agent(other_user, name="Team agent", visibility="shared", shared_with=[user.username])
    now = timezone.now().replace(microsecond=0)
    schedule = due_schedule(api, shared, due=now, interval_seconds=900)
    shared.shared_with.clear()
    assert schedules_fire_due(now=now) == {"paused": 1}
    schedule.refresh_from_db()
    assert (schedule.enabled, schedule.paused_reason) == (False, "access_lost")
    assert not Job.objects.exists()


def test_a_firing_refused_by_the_users_queue_cap_is_recorded_and_writes_no_job(api, agent, settings):
    settings.AGENTOS_USER_MAX_QUEUED = 1
    now = timezone.now().replace(microsecond=0)
    post(api, "send-message/", {"agent_id": agent.public_id, "message": "fills the queue"})
    due_schedule(api, agent, due=now, interval_seconds=900)
    assert schedules_fire_due(now=now) == {"failed": 1}
    run = ScheduleRun.objects.get()
    assert (run.status, run.error_code, run.job) == ("failed", "queue_full", None)
    assert Job.objects.count() == 1


# --- the clock across daylight saving time ----------------------------------------------------

def fire_each_due_time(schedule: Schedule, *, now: datetime, times: int) -> list[datetime]:
    """Tick a second after each due time in turn; the due times the runs were for."""
    for _ in range(times):
        schedules_fire_due(now=now)
        schedule.refresh_from_db()
        now = schedule.next_run_at + timedelta(seconds=1)
    return [run.due_at for run in ScheduleRun.objects.order_by("id")]


def test_a_daily_paris_schedule_keeps_its_wall_clock_time_across_the_spring_change(api, agent):
    paris = ZoneInfo("Europe/Paris")
    schedule = due_schedule(api, agent, due=datetime(2027, 3, 27, 7, 0, tzinfo=UTC), interval_seconds=None,
                            cron="0 8 * * *", timezone="Europe/Paris")
    # Saturday 08:00 CET, then Sunday, the day of the change, then Monday
    fired = fire_each_due_time(schedule, now=datetime(2027, 3, 27, 7, 0, 1, tzinfo=UTC), times=3)
    assert [t.astimezone(paris).strftime("%d %H:%M %Z") for t in fired] == ["27 08:00 CET", "28 08:00 CEST",
                                                                          "29 08:00 CEST"]
    assert fired[1] - fired[0] == timedelta(hours=23)  # the short day


def test_a_time_in_the_skipped_hour_fires_once_when_the_hour_ends_as_cron_does(api, agent):
    schedule = due_schedule(api, agent, due=datetime(2027, 3, 27, 1, 30, tzinfo=UTC), interval_seconds=None,
                            cron="30 2 * * *", timezone="Europe/Paris")
    due = fire_each_due_time(schedule, now=datetime(2027, 3, 27, 1, 30, 1, tzinfo=UTC), times=3)
    assert due == [datetime(2027, 3, 27, 1, 30, tzinfo=UTC),  # 02:30 CET
                   datetime(2027, 3, 28, 1, 0, tzinfo=UTC),  # 02:30 does not exist: 03:00 CEST
                   datetime(2027, 3, 29, 0, 30, tzinfo=UTC)]  # 02:30 CEST
    assert Job.objects.count() == 3


def test_a_time_in_the_repeated_hour_fires_once_in_autumn(api, agent):
    schedule = due_schedule(api, agent, due=datetime(2027, 10, 30, 0, 30, tzinfo=UTC), interval_seconds=None,
                            cron="30 2 * * *", timezone="Europe/Paris")
    due = fire_each_due_time(schedule, now=datetime(2027, 10, 30, 0, 30, 1, tzinfo=UTC), times=3)
    assert due == [datetime(2027, 10, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
                   datetime(2027, 10, 31, 0, 30, tzinfo=UTC),  # the first 02:30 only (CEST)
                   datetime(2027, 11, 1, 1, 30, tzinfo=UTC)]  # 02:30 CET


def test_a_schedule_whose_agent_is_gone_can_still_be_paused_and_edited_but_not_resumed(api, agent):
    created = create(api, agent)
    agent.delete()  # before any tick has paused it
    paused = post(api, f"schedules/{created['id']}/pause/")
    assert paused.status_code == 200, paused.content
    edited = patch(api, f"schedules/{created['id']}/", {"message": "kept for later"})
    assert edited.status_code == 200 and edited.json()["message"] == "kept for later"
    resumed = post(api, f"schedules/{created['id']}/resume/")
    assert (resumed.status_code, error_code(resumed)) == (404, "agent_not_found")
    moved = patch(api, f"schedules/{created['id']}/", {"agent_id": make_agent(agent.owner, name="New").public_id,
                                                        "enabled": True})
    assert moved.status_code == 200 and moved.json()["state"] == "active"
