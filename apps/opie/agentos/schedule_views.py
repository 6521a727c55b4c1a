"""The Schedules pages (/agentos/schedules/): a user's schedules of their agents, the form
that creates one with a preview of its next run times, each one's history, and the buttons
that pause, resume, run and delete it. Thin over apps.schedules: every check is the
services' own (the API's), so the page refuses exactly what the API refuses."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from apps.common import DomainError, NotFound
from apps.jobs.models import Job
from apps.opie.agentos.service import AgentOSService
from apps.opie.agentos.views import page
from apps.schedules import services, timing
from apps.schedules.models import Schedule
from apps.schedules.presenters import UNITS, in_zone, interval_parts, run_to_dict
from apps.schedules.selectors import schedule_get_owned, schedule_list, schedule_runs

PREVIEW_COUNT = 5
RUNS_SHOWN = 50  # the newest; the whole history is GET /api/v1/agentos/schedules/<id>/runs/
# digits an interval may have: the services refuse over a year, and this keeps int() (and a
# datetime's arithmetic) from ever seeing a number too large for them
INTERVAL_DIGITS = 10
# the timezone field's suggestions; any IANA name is accepted
ZONES = (
    "UTC", "Europe/London", "Europe/Dublin", "Europe/Lisbon", "Europe/Paris", "Europe/Berlin", "Europe/Madrid",
    "Europe/Rome", "Europe/Amsterdam", "Europe/Brussels", "Europe/Zurich", "Europe/Vienna", "Europe/Stockholm",
    "Europe/Warsaw", "Europe/Athens", "Europe/Helsinki", "Europe/Istanbul", "Europe/Kyiv", "Europe/Moscow",
    "Africa/Cairo", "Africa/Lagos", "Africa/Johannesburg", "Africa/Nairobi", "Asia/Dubai", "Asia/Kolkata",
    "Asia/Bangkok", "Asia/Singapore", "Asia/Shanghai", "Asia/Hong_Kong", "Asia/Tokyo", "Asia/Seoul",
    "Australia/Perth", "Australia/Sydney", "Pacific/Auckland", "Pacific/Honolulu", "America/Anchorage",
    "America/Los_Angeles", "America/Vancouver", "America/Denver", "America/Chicago", "America/Mexico_City",
    "America/New_York", "America/Toronto", "America/Bogota", "America/Sao_Paulo", "America/Argentina/Buenos_Aires",
)
FORM_DEFAULTS = {"agent_id": "", "name": "", "message": "", "kind": "cron", "cron": "", "interval": "",
                 "unit": "min", "timezone": "UTC", "session": "", "callback_url": "",
                 "misfire": Schedule.Misfire.RUN_LATEST.value, "starts_at": "", "ends_at": ""}
MISFIRES = ((Schedule.Misfire.RUN_LATEST.value, "run once, for the latest missed time"),
            (Schedule.Misfire.SKIP.value, "skip the missed times"))
ACTIONS: dict[str, Callable[..., Any]] = {
    "pause": services.schedule_pause, "resume": services.schedule_resume,
    "run": services.schedule_run_now, "delete": services.schedule_delete}


def _owner(request: HttpRequest) -> AbstractBaseUser:
    """The logged-in user: `page` lets no one else in."""
    user = request.user
    assert isinstance(user, AbstractBaseUser)
    return user


# the form's text, as the services take it (they check it)
def _interval(form: QueryDict) -> int:
    text, unit = form.get("interval", "").strip(), form.get("unit", "s")
    if not (text.isascii() and text.isdigit()) or len(text) > INTERVAL_DIGITS or unit not in UNITS:
        raise DomainError("invalid_input", "interval: a whole number of seconds, minutes or hours, such as 15.")
    return int(text) * UNITS[unit]


def _when(form: QueryDict, field: str) -> datetime | None:
    """A datetime-local value: a wall-clock time, which the services read in the schedule's timezone."""
    text = form.get(field, "").strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise DomainError("invalid_input", f"{field}: a date and time, such as 2030-01-07T08:00.") from None


def _timing(form: QueryDict) -> dict[str, Any]:
    """The timing fields: the cron or the interval, whichever the form's choice names."""
    interval = form.get("kind") == "interval"
    return {"cron": None if interval else form.get("cron", ""),
            "interval_seconds": _interval(form) if interval else None,
            "timezone": form.get("timezone", "UTC").strip(), "starts_at": _when(form, "starts_at"),
            "ends_at": _when(form, "ends_at")}


def _fields(form: QueryDict) -> dict[str, Any]:
    return {"agent_id": form.get("agent_id", ""), "name": form.get("name", ""), "message": form.get("message", ""),
            **_timing(form), "session": form.get("session", "").strip() or services.NEW_SESSION,
            "callback_url": form.get("callback_url", "").strip(), "misfire": form.get("misfire") or None}


# pages
def _list_page(request: HttpRequest, *, form: dict[str, str], error: str = "", status: int = 200) -> HttpResponse:
    return render(request, "opie/schedules.html", {
        "schedules": schedule_list(user=_owner(request)).select_related("agent").order_by("-created_at", "-id"),
        **_form_context(request, form=form), "error": error, "fresh": request.method == "GET",
        "form_action": reverse("opie:schedules")}, status=status)


def _form_context(request: HttpRequest, *, form: dict[str, str]) -> dict[str, Any]:
    """What the schedule form (opie/_schedule_form.html) needs besides its action."""
    svc = AgentOSService(_owner(request))
    return {"form": form, "agents": svc.get_available_agents(), "sessions": svc.list_sessions(limit=30)["sessions"],
            "zones": ZONES, "units": UNITS, "misfires": MISFIRES}


def _form_of(schedule: Schedule) -> dict[str, str]:
    """A schedule as the form shows it: its interval in the largest unit that divides it, its
    window as wall-clock times in its timezone."""
    count, unit = interval_parts(schedule.interval_seconds or 0)

    def local(value: datetime | None) -> str:
        return in_zone(value, schedule.timezone).replace(tzinfo=None).isoformat(timespec="minutes") if value else ""

    return {**FORM_DEFAULTS, "agent_id": schedule.agent_public_id, "name": schedule.name,
            "message": schedule.message, "kind": "cron" if schedule.cron else "interval", "cron": schedule.cron,
            "interval": str(count) if schedule.interval_seconds else "",
            "unit": unit, "timezone": schedule.timezone, "session": schedule.session_public_id,
            "callback_url": schedule.callback_url, "misfire": schedule.misfire,
            "starts_at": local(schedule.starts_at), "ends_at": local(schedule.ends_at)}


@page
def schedules(request: HttpRequest) -> HttpResponse:
    """GET: the user's schedules and the form (`?agent_id=` preselects an agent); POST: the form."""
    if request.method != "POST":
        return _list_page(request, form={**FORM_DEFAULTS, "agent_id": request.GET.get("agent_id", "")})
    try:
        created = services.schedule_create(owner=_owner(request), **_fields(request.POST))
    except DomainError as exc:
        # said on the form, which keeps what was typed; a mistyped agent or session id is the
        # form's mistake (400), not a missing page
        return _list_page(request, form={**FORM_DEFAULTS, **request.POST.dict()}, error=exc.message,
                          status=400 if isinstance(exc, NotFound) else exc.status)
    return redirect(f"{reverse('opie:schedules')}#schedule-{created.public_id}")


@page
@require_GET
def schedule_preview(request: HttpRequest) -> HttpResponse:
    """The form's next PREVIEW_COUNT run times in its timezone, or why it cannot run; writes
    nothing. Always 200: it describes the input, and htmx swaps only a success into the form."""
    chosen = "interval" if request.GET.get("kind") == "interval" else "cron"
    if not request.GET.get(chosen, "").strip():
        return render(request, "opie/_schedule_preview.html", {"empty": chosen})
    try:
        schedule = services.schedule_timing_check(**_timing(request.GET))
    except DomainError as exc:
        return render(request, "opie/_schedule_preview.html", {"error": exc.message})
    times = timing.upcoming(schedule, after=timezone.now(), count=PREVIEW_COUNT)
    return render(request, "opie/_schedule_preview.html", {"times": times, "zone": schedule.timezone})


def _detail_page(request: HttpRequest, schedule: Schedule, *, error: str = "", status: int = 200,
                 form: dict[str, str] | None = None, form_error: str = "") -> HttpResponse:
    runs = schedule_runs(schedule=schedule).order_by("-created_at", "-id")[:RUNS_SHOWN]
    return render(request, "opie/schedule.html", {
        **_form_context(request, form=form or _form_of(schedule)), "form_error": form_error,
        "form_action": reverse("opie:schedule_edit", args=[schedule.public_id]), "fresh": False,
        "s": schedule, "error": error, "shown": RUNS_SHOWN, "misfire_labels": dict(MISFIRES),
        "runs": [{"run": run, **run_to_dict(run, tz=schedule.timezone)} for run in runs]}, status=status)


@page
@require_GET
def schedule_detail(request: HttpRequest, schedule_id: str) -> HttpResponse:
    return _detail_page(request, schedule_get_owned(user=_owner(request), schedule_id=schedule_id))


@page
@require_POST
def schedule_edit(request: HttpRequest, schedule_id: str) -> HttpResponse:
    """The detail page's Edit form: the whole schedule again, checked as the API's PATCH is."""
    schedule = schedule_get_owned(user=_owner(request), schedule_id=schedule_id)  # someone else's: 404, first
    try:
        services.schedule_update(schedule=schedule, **{
            key: value for key, value in _fields(request.POST).items()
            if value is not None or key in services.NULLABLE})
    except DomainError as exc:
        return _detail_page(request, schedule, form={**FORM_DEFAULTS, **request.POST.dict()}, form_error=exc.message,
                            status=400 if isinstance(exc, NotFound) else exc.status)
    return redirect(reverse("opie:schedule", args=[schedule_id]))


# the buttons
def _row(request: HttpRequest, schedule: Schedule, *, job: Job | None = None, error: str = "",
         status: int = 200) -> HttpResponse:
    return render(request, "opie/_schedule_row.html", {"s": schedule, "job": job, "error": error,
                                                       "next": reverse("opie:schedules")}, status=status)


def _back(request: HttpRequest, fallback: str) -> str:
    """The page the button was on (its form's `next`), if that is a page of this site."""
    target = request.POST.get("next", "")
    safe = url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure())
    return target if safe else fallback


@page
@require_POST
def schedule_action(request: HttpRequest, schedule_id: str, action: str) -> HttpResponse:
    """Pause, Resume, Run now or Delete. From the list (htmx) the answer is the schedule's
    row again; without script, the page the button was on."""
    schedule = schedule_get_owned(user=_owner(request), schedule_id=schedule_id)  # someone else's: 404, first
    htmx = request.headers.get("HX-Request") == "true"
    try:
        done = ACTIONS[action](schedule=schedule)
    except DomainError as exc:
        # a refusal about the user's own schedule (its agent is gone: resume's 404 agent_not_found,
        # run's 409 schedule_unusable) is said next to it, not a missing page
        status = 409 if isinstance(exc, NotFound) else exc.status
        if htmx:
            return _row(request, schedule, error=exc.message, status=status)
        return _detail_page(request, schedule, error=exc.message, status=status)
    if action == "delete":
        return HttpResponse("") if htmx else redirect(_back(request, reverse("opie:schedules")))
    if htmx:
        return _row(request, schedule_get_owned(user=_owner(request), schedule_id=schedule_id),
                    job=done if action == "run" else None)
    return redirect(_back(request, reverse("opie:schedule", args=[schedule_id])))
