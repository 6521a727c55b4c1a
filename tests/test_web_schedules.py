"""The Schedules pages: the list, the form and its preview of the next run times, the
Pause / Resume / Run now / Delete buttons (with htmx and without script), each schedule's
history, an agent's schedules on its page, the dashboard's count and the admin. Someone
else's schedule is a 404 on every path, and nothing of it changes."""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.test import Client

from apps.agents.services import agent_delete
from apps.chat.services import session_create
from apps.jobs.models import Job
from apps.schedules.models import Schedule, ScheduleRun
from apps.schedules.services import schedule_create, schedule_pause, schedule_run_now, schedules_fire_due
from tests.factories import make_agent, make_user

PARIS = ZoneInfo("Europe/Paris")
HTMX = {"HTTP_HX_REQUEST": "true"}
FORM = {"agent_id": "", "name": "Morning summary", "message": "Summarise the new documents", "kind": "cron",
        "cron": "0 8 * * 1-5", "interval": "", "unit": "min", "timezone": "Europe/Paris", "session": "",
        "callback_url": "", "misfire": "run_latest", "starts_at": "", "ends_at": ""}


def make_schedule(owner: Any, agent: Any, **fields: Any) -> Schedule:
    return schedule_create(owner=owner, **{"agent_id": agent.public_id, "message": "summarise the new documents",
                                           "interval_seconds": 900, **fields})


def act(client: Client, schedule: Schedule, action: str, **extra: Any) -> Any:
    return client.post(f"/agentos/schedules/{schedule.public_id}/{action}/", **extra)


def preview(client: Client, **params: str) -> str:
    answer = client.get("/agentos/schedules/preview/", params)
    assert answer.status_code == 200
    return answer.content.decode()


def shown_times(html: str) -> list[str]:
    return re.findall(r"<li><time datetime=\"[^\"]+\">([^<]+)</time></li>", html)


def test_the_page_lists_only_the_users_own_schedules_in_their_timezones(alice, user, other_user, agent):
    morning = make_schedule(user, agent, interval_seconds=None, cron="0 8 * * 1-5", timezone="Europe/Paris",
                            name="Morning summary")
    paused = schedule_pause(schedule=make_schedule(user, agent, message="check the inbox"))
    theirs = make_schedule(other_user, make_agent(other_user, name="Mallory's agent"), name="Mallory's plan")

    page = alice.get("/agentos/schedules/").content.decode()

    assert f'id="schedule-{morning.public_id}"' in page and f'id="schedule-{paused.public_id}"' in page
    assert theirs.public_id not in page and "Mallory" not in page
    assert page.index(paused.public_id) < page.index(morning.public_id), "newest first"
    assert f'href="/agentos/schedules/{morning.public_id}/">Morning summary</a>' in page
    assert f'href="/agentos/schedules/{paused.public_id}/">check the inbox</a>' in page  # no name: its message
    assert "<code>0 8 * * 1-5</code>" in page and "every 15 min" in page and "<td>Europe/Paris</td>" in page
    assert '<span class="badge active">active</span>' in page
    assert '<span class="badge paused">paused</span> <span class="muted small">paused by its owner</span>' in page
    local = morning.next_run_at.astimezone(PARIS)
    assert f'<time datetime="{local.isoformat()}">{local:%a %Y-%m-%d} 08:00 {local:%Z}</time>' in page
    assert ">Pause</button>" in page and ">Resume</button>" in page and ">Run now</button>" in page
    assert 'href="/agentos/schedules/" aria-current="page">Schedules</a>' in page


def test_creating_through_the_form_writes_one_schedule_with_the_forms_fields(alice, user, agent):
    created = alice.post("/agentos/schedules/", {
        **FORM, "agent_id": agent.public_id, "starts_at": "2030-01-07T00:00", "ends_at": "2030-06-30T18:00",
        "misfire": "skip", "callback_url": "https://hooks.example.com/opie"})

    schedule = Schedule.objects.get()
    assert created.status_code == 302 and created["Location"] == f"/agentos/schedules/#schedule-{schedule.public_id}"
    assert (schedule.owner, schedule.agent, schedule.name, schedule.message) == (
        user, agent, "Morning summary", "Summarise the new documents")
    assert (schedule.cron, schedule.interval_seconds, schedule.timezone) == ("0 8 * * 1-5", None, "Europe/Paris")
    assert schedule.starts_at == datetime(2030, 1, 7, tzinfo=PARIS)  # wall-clock time in the schedule's zone
    assert schedule.ends_at == datetime(2030, 6, 30, 18, tzinfo=PARIS)
    assert schedule.next_run_at == datetime(2030, 1, 7, 8, tzinfo=PARIS)
    assert (schedule.misfire, schedule.callback_url, schedule.session, schedule.enabled) == (
        "skip", "https://hooks.example.com/opie", None, True)

    session = session_create(user=user, agent=agent, title="Inbox")
    alice.post("/agentos/schedules/", {**FORM, "agent_id": agent.public_id, "kind": "interval", "cron": "ignored",
                                       "interval": "2", "unit": "h", "session": session.public_id})
    interval = Schedule.objects.exclude(pk=schedule.pk).get()
    assert (interval.cron, interval.interval_seconds, interval.session) == ("", 7200, session)


def test_a_bad_cron_shows_the_error_on_the_form_keeps_the_input_and_writes_nothing(alice, agent):
    answer = alice.post("/agentos/schedules/", {**FORM, "agent_id": agent.public_id, "cron": "61 8 * * *"})

    page = answer.content.decode()
    assert answer.status_code == 400
    assert '<p class="error" role="alert">cron: minute field: 61 is out of range 0-59</p>' in page
    assert 'value="61 8 * * *"' in page and ">Summarise the new documents</textarea>" in page
    assert 'value="Europe/Paris"' in page and f'<option value="{agent.public_id}" selected>' in page
    assert not Schedule.objects.exists()
    unknown = alice.post("/agentos/schedules/", {**FORM, "agent_id": agent.public_id, "session": "sess-nope"})
    assert unknown.status_code == 400 and "No such session." in unknown.content.decode()
    short = alice.post("/agentos/schedules/", {**FORM, "agent_id": agent.public_id, "kind": "interval",
                                               "interval": "30", "unit": "s"})
    assert short.status_code == 400 and "interval_seconds must be at least 60." in short.content.decode()
    assert not Schedule.objects.exists()


def test_the_preview_lists_the_next_five_times_in_the_schedules_timezone(alice):
    weekdays = preview(alice, kind="cron", cron="0 8 * * 1-5", timezone="Europe/Paris", starts_at="2030-01-05T00:00")
    daily = preview(alice, kind="cron", cron="0 8 * * *", timezone="Europe/Paris", starts_at="2030-03-29T00:00")
    interval = preview(alice, kind="interval", interval="90", unit="min", timezone="America/New_York",
                       starts_at="2030-01-07T23:00")

    assert "Next 5 runs (Europe/Paris):" in weekdays
    assert shown_times(weekdays) == ["Mon 2030-01-07 08:00 CET", "Tue 2030-01-08 08:00 CET", "Wed 2030-01-09 08:00 CET",
                                     "Thu 2030-01-10 08:00 CET", "Fri 2030-01-11 08:00 CET"]
    assert '<time datetime="2030-01-07T08:00:00+01:00">' in weekdays
    # across the spring change: still 08:00 on the clock, one hour earlier in UTC
    assert shown_times(daily) == ["Fri 2030-03-29 08:00 CET", "Sat 2030-03-30 08:00 CET", "Sun 2030-03-31 08:00 CEST",
                                  "Mon 2030-04-01 08:00 CEST", "Tue 2030-04-02 08:00 CEST"]
    assert shown_times(interval) == ["Mon 2030-01-07 23:00 EST", "Tue 2030-01-08 00:30 EST", "Tue 2030-01-08 02:00 EST",
                                     "Tue 2030-01-08 03:30 EST", "Tue 2030-01-08 05:00 EST"]
    assert not Schedule.objects.exists()


def test_the_preview_says_what_is_wrong_with_the_timing_and_writes_nothing(alice):
    zone = preview(alice, kind="cron", cron="0 8 * * *", timezone="Mars/Olympus_Mons")
    short = preview(alice, kind="interval", interval="30", unit="s", timezone="UTC")
    long = preview(alice, kind="interval", interval="9000", unit="h", timezone="UTC")
    digits = preview(alice, kind="interval", interval="9" * 5000, unit="s", timezone="UTC")
    cron = preview(alice, kind="cron", cron="0 8 * *", timezone="UTC")
    window = preview(alice, kind="cron", cron="0 8 * * *", timezone="UTC", starts_at="2030-01-07T00:00",
                     ends_at="2030-01-06T00:00")
    empty = preview(alice, kind="cron", cron=" ", timezone="UTC")

    assert '<p class="error">timezone: unknown timezone: &#x27;Mars/Olympus_Mons&#x27;</p>' in zone
    assert '<p class="error">interval_seconds must be at least 60.</p>' in short
    assert "interval_seconds must be at most 31622400 (a year)." in long
    assert "interval: a whole number of seconds, minutes or hours, such as 15." in digits
    assert "cron: expected 5 fields" in cron and "ends_at must be after starts_at." in window
    assert "Enter a cron expression to see its next run times." in empty
    for html in (zone, short, long, digits, cron, window, empty):
        assert shown_times(html) == []
    assert not Schedule.objects.exists()


def test_pause_resume_run_now_and_delete_work_without_script_by_going_back(alice, user, agent):
    schedule = make_schedule(user, agent)
    detail = f"/agentos/schedules/{schedule.public_id}/"

    paused = act(alice, schedule, "pause", data={"next": "/agentos/schedules/"})
    schedule.refresh_from_db()
    assert paused.status_code == 302 and paused["Location"] == "/agentos/schedules/"
    assert (schedule.enabled, schedule.paused_reason, schedule.next_run_at) == (False, "user", None)

    resumed = act(alice, schedule, "resume", data={"next": "https://elsewhere.example/"})
    schedule.refresh_from_db()
    assert resumed.status_code == 302 and resumed["Location"] == detail, "only a page of this site"
    assert schedule.enabled and schedule.next_run_at is not None

    ran = act(alice, schedule, "run", data={"next": detail})
    job = Job.objects.get()
    assert ran.status_code == 302 and ran["Location"] == detail
    assert (job.kind, job.status, job.agent, job.owner) == ("message", "queued", agent, user)
    run = ScheduleRun.objects.get()
    assert (run.trigger, run.job) == ("manual", job)

    deleted = act(alice, schedule, "delete", data={"next": "/agentos/schedules/"})
    assert deleted.status_code == 302 and deleted["Location"] == "/agentos/schedules/"
    assert not Schedule.objects.exists() and not ScheduleRun.objects.exists()
    assert Job.objects.filter(pk=job.pk).exists(), "the jobs it made stay"


def test_the_lists_buttons_swap_their_row_with_htmx(alice, user, agent):
    schedule = make_schedule(user, agent, name="Inbox check")

    paused = act(alice, schedule, "pause", **HTMX).content.decode()
    resumed = act(alice, schedule, "resume", **HTMX).content.decode()
    ran = act(alice, schedule, "run", **HTMX).content.decode()
    deleted = act(alice, schedule, "delete", **HTMX)

    assert paused.startswith(f'<tr class="schedule" id="schedule-{schedule.public_id}">')
    assert ">Resume</button>" in paused and ">Pause</button>" not in paused and "badge paused" in paused
    assert ">Pause</button>" in resumed and "badge active" in resumed
    job = Job.objects.get()
    assert f'Run started · <a href="/agentos/session/{job.session.public_id}/">its session</a>' in ran
    assert ">never</td>" not in ran, "its last run is now"
    assert deleted.status_code == 200 and deleted.content == b"" and not Schedule.objects.exists()


def test_a_refused_button_says_why_next_to_its_schedule(alice, user, agent):
    schedule = make_schedule(user, agent)
    agent_delete(agent=agent)

    row = act(alice, schedule, "run", **HTMX)
    page = act(alice, schedule, "run")
    schedules_fire_due()  # the tick pauses it: its agent is gone
    resume = act(alice, schedule, "resume", **HTMX)

    assert row.status_code == 409 and row.content.decode().startswith('<tr class="schedule"')
    assert '<p class="error" role="alert">The schedule cannot run: its agent was deleted.</p>' in row.content.decode()
    assert page.status_code == 409 and "The schedule cannot run: its agent was deleted." in page.content.decode()
    assert "<h2>History</h2>" in page.content.decode(), "without script: the schedule's own page, saying why"
    assert resume.status_code == 409 and "No such agent." in resume.content.decode()
    assert "its agent was deleted" in resume.content.decode()
    assert not Job.objects.exists() and not Schedule.objects.get().enabled


def test_the_detail_page_shows_the_runs_newest_first_with_status_and_session(alice, user, agent):
    schedule = make_schedule(user, agent, misfire="skip", name="Digest", callback_url="https://hooks.example.com/d")
    schedules_fire_due(now=schedule.next_run_at + timedelta(hours=2, minutes=5))  # beat was down: skipped
    manual = schedule_run_now(schedule=schedule)
    Job.objects.filter(pk=manual.pk).update(status=Job.Status.SUCCEEDED)

    page = alice.get(f"/agentos/schedules/{schedule.public_id}/").content.decode()

    skipped, ran = ScheduleRun.objects.get(trigger="schedule"), ScheduleRun.objects.get(trigger="manual")
    assert "<h1>Digest</h1>" in page and "every 15 min" in page and "skip the missed times" in page
    assert "https://hooks.example.com/d" in page and "a new one for each run" in page
    assert page.index(f'id="run-{ran.public_id}"') < page.index(f'id="run-{skipped.public_id}"'), "newest first"
    manual_row = page.split(f'id="run-{ran.public_id}"')[1].split("</tr>")[0]
    skipped_row = page.split(f'id="run-{skipped.public_id}"')[1].split("</tr>")[0]
    assert "<td>manual</td>" in manual_row and '<span class="badge succeeded">succeeded</span>' in manual_row
    assert f'<a href="/agentos/session/{manual.session.public_id}/">session</a>' in manual_row
    assert "<td>schedule</td>" in skipped_row and '<span class="badge skipped">skipped</span>' in skipped_row
    assert f"{skipped.missed} (skip)" in skipped_row and "<td>–</td>" in skipped_row  # no job, no session
    assert ">Pause</button>" in page and ">Run now</button>" in page and ">Delete</button>" in page


def test_someone_elses_schedule_is_404_on_every_path_and_nothing_changes(alice, mallory, user, agent):
    schedule = make_schedule(user, agent)
    before = Schedule.objects.values().get()

    assert mallory.get(f"/agentos/schedules/{schedule.public_id}/").status_code == 404
    assert b"Not found" in mallory.get(f"/agentos/schedules/{schedule.public_id}/").content
    for action in ("pause", "resume", "run", "delete"):
        assert act(mallory, schedule, action).status_code == 404, action
        assert act(mallory, schedule, action, **HTMX).status_code == 404, action
    into = mallory.post("/agentos/schedules/", {**FORM, "agent_id": agent.public_id})  # alice's private agent
    assert into.status_code == 400 and "No such agent." in into.content.decode()
    assert schedule.public_id not in mallory.get("/agentos/schedules/").content.decode()

    assert list(Schedule.objects.values()) == [before]
    assert not ScheduleRun.objects.exists() and not Job.objects.exists()
    assert alice.get(f"/agentos/schedules/{schedule.public_id}/").status_code == 200


def test_the_agent_page_lists_its_schedules_and_links_to_a_new_one(alice, user, agent):
    mine = make_schedule(user, agent, name="Weekly report", interval_seconds=None, cron="@weekly")
    other = make_schedule(user, make_agent(user, name="Other"), name="Other agent's")

    page = alice.get(f"/agentos/agents/{agent.public_id}/edit/").content.decode()
    form = alice.get(f"/agentos/schedules/?agent_id={agent.public_id}").content.decode()

    assert f'<a href="/agentos/schedules/{mine.public_id}/">Weekly report</a>' in page
    assert other.public_id not in page and "<code>@weekly</code> · UTC" in page and "badge active" in page
    assert f'href="/agentos/schedules/?agent_id={agent.public_id}#new">New schedule</a>' in page
    assert f'<option value="{agent.public_id}" selected>Helper</option>' in form
    listed = alice.get("/agentos/agents/").content.decode()
    assert f'href="/agentos/schedules/?agent_id={agent.public_id}#new">Schedule</a>' in listed


def test_the_dashboard_counts_the_users_active_schedules(alice, user, other_user, agent):
    assert "No active schedule" in alice.get("/agentos/").content.decode()
    make_schedule(user, agent)
    make_schedule(user, agent)
    schedule_pause(schedule=make_schedule(user, agent))
    make_schedule(other_user, make_agent(other_user))

    page = alice.get("/agentos/").content.decode()

    assert '<a href="/agentos/schedules/">2 active schedules</a>' in page


def test_the_pages_need_a_login_and_the_form_a_csrf_token(client, user, agent):
    for path in ("/agentos/schedules/", "/agentos/schedules/preview/?cron=0+8+*+*+*"):
        answer = client.get(path)
        assert answer.status_code == 302 and answer["Location"].startswith("/accounts/login/?next="), path
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)

    refused = strict.post("/agentos/schedules/", {**FORM, "agent_id": agent.public_id})

    assert refused.status_code == 403 and not Schedule.objects.exists()


def test_the_admin_changelist_lists_every_users_schedules(user, other_user, agent):
    mine = make_schedule(user, agent)
    theirs = make_schedule(other_user, make_agent(other_user))
    staff = Client()
    staff.force_login(make_user("root", is_staff=True, is_superuser=True))

    page = staff.get("/admin/schedules/schedule/")

    assert page.status_code == 200
    assert mine.public_id in page.content.decode() and theirs.public_id in page.content.decode()


def test_the_detail_pages_edit_form_shows_the_schedule_and_saves_changes(alice, user, agent):
    schedule = make_schedule(user, agent, interval_seconds=5400, timezone="America/New_York",
                             starts_at=datetime(2099, 1, 5, 9, 0))
    page = alice.get(f"/agentos/schedules/{schedule.public_id}/").content.decode()
    assert f'action="/agentos/schedules/{schedule.public_id}/edit/"' in page
    assert 'name="interval" type="number" min="1" step="1" value="90"' in page  # 5400 s as 90 min
    assert 'value="2099-01-05T09:00"' in page  # its window as wall-clock time in its zone

    answer = alice.post(f"/agentos/schedules/{schedule.public_id}/edit/",
                        {**FORM, "agent_id": agent.public_id, "cron": "30 6 * * *", "timezone": "Asia/Tokyo",
                         "message": "the new words"})

    assert answer.status_code == 302 and answer["Location"] == f"/agentos/schedules/{schedule.public_id}/"
    schedule.refresh_from_db()
    assert (schedule.cron, schedule.interval_seconds, schedule.timezone, schedule.message) == (
        "30 6 * * *", None, "Asia/Tokyo", "the new words")
    local = schedule.next_run_at.astimezone(ZoneInfo("Asia/Tokyo"))
    assert (local.hour, local.minute) == (6, 30) and schedule.starts_at is None


def test_a_refused_edit_says_why_keeps_the_input_and_changes_nothing(alice, user, agent):
    schedule = make_schedule(user, agent)
    answer = alice.post(f"/agentos/schedules/{schedule.public_id}/edit/",
                        {**FORM, "agent_id": agent.public_id, "cron": "0 25 * * *", "message": "typed words"})
    assert answer.status_code == 400
    page = answer.content.decode()
    assert "hour field" in page and "typed words" in page and "<details class=\"card\" id=\"edit\" open>" in page
    schedule.refresh_from_db()
    assert (schedule.cron, schedule.interval_seconds, schedule.message) == ("", 900, "summarise the new documents")
