"""Web views (the seed's `apps.opie.agentos.views`): server-rendered pages and
htmx fragments over the same services as the REST API. Session login; CSRF on
every form. Someone else's agent, session, job or document is a 404."""
from __future__ import annotations

import json
from functools import wraps
from typing import Any, Callable, Iterable

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.models import ApiToken
from apps.accounts.services import api_token_create, api_token_revoke
from apps.agents.models import Agent
from apps.agents.selectors import agent_get_visible
from apps.agents.tools import POLICIES, TOOLS, tool_policy
from apps.chat.selectors import session_get_owned
from apps.chat.services import session_delete, session_rename
from apps.common import AgentOSDisabled, DomainError, NotFound, agentos_enabled_check
from apps.events.stream import event_stream_response, job_for_stream
from apps.jobs.actions import job_get_for_decision
from apps.jobs.models import Job, JobAction
from apps.jobs.selectors import actions_pending, agent_metrics, job_get_owned
from apps.knowledge.models import Document
from apps.knowledge.selectors import document_get, kb_list_visible
from apps.knowledge.services import document_upload, kb_attach, kb_detach, vault_for
from apps.opie.agentos.service import AgentOSService
from apps.opie.checks import workers_by_queue
from apps.schedules.presenters import schedule_state
from apps.schedules.selectors import schedule_list
from apps.usage.presenters import usage_days, usage_range, usage_rows_to_json, usage_totals
from apps.usage.selectors import usage_report
from apps.webhooks.models import WebhookDelivery
from apps.webhooks.services import webhook_secret_get_or_create, webhook_secret_rotate

View = Callable[..., HttpResponse]


def _disabled(request: HttpRequest) -> HttpResponse:
    return render(request, "opie/error.html", {
        "status": 503, "title": "AgentOS is turned off",
        "detail": "The administrator has turned the AgentOS integration off (AGENTOS_ENABLED=False). "
                  "Agents, chats and sessions are unavailable until it is turned back on."}, status=503)


def agentos_enabled(view: View) -> View:
    """With AGENTOS_ENABLED=False every AgentOS page says so (503), and nothing runs."""
    if iscoroutinefunction(view):
        @wraps(view)
        async def awaited(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                agentos_enabled_check()
            except AgentOSDisabled:
                return await sync_to_async(_disabled)(request)
            return await view(request, *args, **kwargs)
        return awaited

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            agentos_enabled_check()
        except AgentOSDisabled:
            return _disabled(request)
        return view(request, *args, **kwargs)
    return wrapped


def page(view: View) -> View:
    """Logged in, AgentOS on, and a domain 404 rendered as the app's 404 page (sync or async views)."""
    if iscoroutinefunction(view):
        @wraps(view)
        async def awaited(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                return await view(request, *args, **kwargs)
            except NotFound as exc:
                raise Http404(exc.message) from exc
        return agentos_enabled(login_required(awaited))

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from exc
    return agentos_enabled(login_required(wrapped))


def home(request: HttpRequest) -> HttpResponse:
    return redirect("opie:dashboard")


@page
def dashboard(request: HttpRequest) -> HttpResponse:
    svc = AgentOSService(request.user)
    in_flight = Job.objects.filter(owner=request.user, status__in=[Job.Status.QUEUED, Job.Status.RUNNING])
    failures = Job.objects.filter(owner=request.user, status__in=[Job.Status.FAILED, Job.Status.EXPIRED])
    return render(request, "opie/dashboard.html", {
        "info": svc.info(), "agents": svc.get_available_agents(), "sessions": svc.list_sessions(limit=8)["sessions"],
        "in_flight": in_flight.select_related("agent", "session").order_by("-created_at")[:10],
        "failures": failures.select_related("agent", "session").order_by("-finished_at")[:5],
        "waiting": actions_pending(user=request.user).count(),
        # a user keeps AGENTOS_USER_MAX_SCHEDULES (50) at most; "active" is the API's state, not a second rule
        "schedules_active": sum(schedule_state(s) == "active"
                                for s in schedule_list(user=request.user).only("enabled", "next_run_at")),
        "workers": _workers_online() if request.user.is_staff else None})


def _workers_online() -> list[str]:
    try:
        return sorted({w for workers in workers_by_queue(timeout=1.0).values() for w in workers})
    except Exception:  # the broker is down: the dashboard still renders
        return []


# agents
def _sparkline(counts: list[int], width: int = 140, height: int = 28) -> str:
    top = max(counts) or 1
    step = width / len(counts)
    bars = "".join(f'<rect x="{i * step + 1:.1f}" y="{height - (c / top) * height:.1f}" width="{step - 2:.1f}" '
                   f'height="{(c / top) * height:.1f}"></rect>' for i, c in enumerate(counts))
    return (f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="jobs per day, last {len(counts)} days: {", ".join(map(str, counts))}">{bars}</svg>')


@page
def agents(request: HttpRequest) -> HttpResponse:
    svc = AgentOSService(request.user)
    listed = svc.get_available_agents()
    rows = {a.public_id: a for a in Agent.objects.filter(public_id__in=[x["id"] for x in listed])
            .prefetch_related("knowledge_bases")}
    metrics = agent_metrics(agent_pks=[a.pk for a in rows.values()], viewer=request.user)
    cards = []
    for data in listed:
        agent = rows[data["id"]]
        m = metrics.get(agent.pk, {})
        cards.append({**data, "metrics": m, "chart": _sparkline(m.get("per_day") or [0] * 14),
                      "knowledge": [kb for kb in agent.knowledge_bases.all()]})
    return render(request, "opie/agents.html", {"agents": cards})


@page
def agent_edit(request: HttpRequest, agent_id: str) -> HttpResponse:
    svc = AgentOSService(request.user)
    agent = agent_get_visible(user=request.user, agent_id=agent_id)
    if agent.owner_id != request.user.pk:
        raise Http404("agent")
    readable = list(kb_list_visible(user=request.user).order_by("name"))
    error = None
    if request.method == "POST":
        form = request.POST
        changes: dict[str, Any] = {
            "name": form.get("name", ""), "description": form.get("description", ""),
            "instructions": form.get("instructions", ""), "tools": form.getlist("tools"),
            "visibility": form.get("visibility", "private"),
            "shared_with": [u.strip() for u in form.get("shared_with", "").split(",") if u.strip()],
            "model_provider": form.get("model_provider", "local"), "model_id": form.get("model_id", "echo"),
            # what the selects show is what is stored; `auto` is the default, so it is left out
            "tool_policies": {tool: form[f"policy_{tool}"] for tool in TOOLS
                              if form.get(f"policy_{tool}", "auto") != "auto"}}
        try:
            svc.update_agent(agent_id, **changes)
            wanted = set(form.getlist("knowledge"))
            for kb in readable:
                attached = agent.knowledge_bases.filter(pk=kb.pk).exists()
                if kb.public_id in wanted and not attached:
                    kb_attach(user=request.user, kb=kb, agent=agent)
                elif kb.public_id not in wanted and attached:
                    kb_detach(kb=kb, agent=agent)
            return redirect("opie:agents")
        except DomainError as exc:
            error = exc.message
        agent.refresh_from_db()
    attached = set(agent.knowledge_bases.values_list("public_id", flat=True))
    return render(request, "opie/agent_edit.html", {
        "agent": agent, "tools": [(name, tool_policy(agent.tool_policies, name)) for name in sorted(TOOLS)],
        "policies": POLICIES, "knowledge": readable, "attached": attached, "error": error,
        "shared_with": ", ".join(agent.shared_with.values_list("username", flat=True)),
        "providers": ["local", "openai", "openai_like", "anthropic", "ollama"],
        "schedules": schedule_list(user=request.user, agent_id=agent.public_id).order_by("-created_at", "-id")})


# chat
@page
def chat(request: HttpRequest, agent_id: str) -> HttpResponse:
    svc = AgentOSService(request.user)
    agent = svc.get_agent(agent_id)
    sessions = svc.list_sessions(agent_id=agent_id, limit=30)["sessions"]
    session = None
    current = request.GET.get("session")
    if current:
        session = svc.get_session(current)
        if session["agent_id"] != agent_id:
            raise Http404("session")
    replies = _replies_by_job(request, session)
    vault = vault_for(user=request.user)
    return render(request, "opie/chat.html", {
        "agent": agent, "sessions": sessions, "session": session, "replies": replies,
        "actions": _cards_by_job(request, replies),
        "documents": vault.documents.defer("data").select_related("knowledge_base", "job")[:10]})


def _replies_by_job(request: HttpRequest, session: dict[str, Any] | None) -> dict[str, Job]:
    """The jobs behind the transcript's user messages, for pending / failed states."""
    if session is None:
        return {}
    ids = [m["job_id"] for m in session["messages"] if m["job_id"]]
    return {j.public_id: j for j in Job.objects.filter(owner=request.user, public_id__in=ids)}


def _cards_by_job(request: HttpRequest, replies: dict[str, Job]) -> dict[str, list[dict[str, Any]]]:
    """The action cards of the transcript's paused jobs: a page loaded while a run waits shows them."""
    paused = [job for job in replies.values() if job.status == Job.Status.REQUIRES_ACTION]
    cards: dict[str, list[dict[str, Any]]] = {}
    if paused:
        for card in _cards(actions_pending(user=request.user, jobs=paused).order_by("id")):
            cards.setdefault(card["action"].job.public_id, []).append(card)
    return cards


def _cards(actions: Iterable[JobAction]) -> list[dict[str, Any]]:
    """What an action card shows: the action, and the call's arguments as indented JSON."""
    return [{"action": action, "arguments": json.dumps(action.arguments, indent=2, ensure_ascii=False)}
            for action in actions]


@page
@require_POST
def chat_send(request: HttpRequest, agent_id: str) -> HttpResponse:
    svc = AgentOSService(request.user)
    message = request.POST.get("message", "")
    session_id = request.POST.get("session_id") or None
    try:
        accepted = svc.send_message(agent_id, message, session_id=session_id)
    except DomainError as exc:
        if isinstance(exc, NotFound):
            raise
        return render(request, "opie/_error_note.html", {"message": exc.message}, status=exc.status)
    job = job_get_owned(user=request.user, job_id=accepted["job_id"])
    return render(request, "opie/_sent.html", {"message": message, "job": job, "agent_id": agent_id,
                                               "session_id": accepted["session_id"]})


@page
@require_GET
def job_reply(request: HttpRequest, job_id: str) -> HttpResponse:
    """The reply to one message as it stands: pending, answered, failed or cancelled."""
    job = job_get_owned(user=request.user, job_id=job_id)
    reply = job.messages.filter(role="assistant").first()
    user_message = job.messages.filter(role="user").first()
    actions = _cards(actions_pending(user=request.user, jobs=[job]).order_by("id")) if job.pauses else []
    return render(request, "opie/_reply.html", {"job": job, "reply": reply, "user_message": user_message,
                                                "actions": actions})


@page
@require_GET
async def job_events(request: HttpRequest, job_id: str) -> HttpResponse:
    """The job's Server-Sent Events for the page that is showing it (session auth).
    Async, like the API's stream: an open chat page holds no thread of the server."""
    raw = request.headers.get("Last-Event-ID", "")
    after = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 10 else 0
    user = await request.auser()
    job, told_all = await sync_to_async(job_for_stream)(user=user, job_id=job_id, after_seq=after)
    return HttpResponse(status=204) if told_all else event_stream_response(job=job, after_seq=after)


@page
@require_POST
def job_cancel_request(request: HttpRequest, job_id: str) -> HttpResponse:
    """The chat page's Cancel button: asks for the job to stop (a finished one is left alone)."""
    try:
        AgentOSService(request.user).request_job_cancel(job_id)
    except DomainError as exc:
        if isinstance(exc, NotFound):
            raise
    return HttpResponse(status=204)


# paused runs: a person decides
@page
@require_GET
def job_actions(request: HttpRequest, job_id: str) -> HttpResponse:
    """The cards of a paused job's pending actions: the chat fetches them into the
    pending reply when its stream says `job.action_required` (the stream goes on)."""
    job = job_get_owned(user=request.user, job_id=job_id)
    actions = actions_pending(user=request.user, jobs=[job]).order_by("id")
    return render(request, "opie/_actions.html", {"actions": _cards(actions)})


@page
@require_POST
def action_decide(request: HttpRequest, job_id: str, action_id: str) -> HttpResponse:
    """One card's form: Approve or Reject (with its note), or Submit the input's values
    (fields `value:<name>`). The service checks the rest, as for the API's decisions."""
    # another user's job, or an action of another job, is a 404 before anything else
    paused, _ = job_get_for_decision(user=request.user, job_id=job_id)
    if not JobAction.objects.filter(job=paused, public_id=action_id).exists():
        raise NotFound("action")
    form = request.POST
    choice = form.get("decision", "")
    decision: dict[str, Any] = {"action_id": action_id, "note": form.get("note", "")}
    if choice == "input":
        decision["values"] = {name.removeprefix("value:"): value for name, value in form.items()
                              if name.startswith("value:")}
    elif choice in ("approve", "reject"):
        decision["approved"] = choice == "approve"
    else:
        return render(request, "opie/_error_note.html", {"message": "Choose Approve or Reject."}, status=400)
    try:
        job = AgentOSService(request.user).decide_actions(job_id, [decision])
    except DomainError as exc:
        if isinstance(exc, NotFound):
            raise
        return render(request, "opie/_error_note.html", {"message": exc.message}, status=exc.status)
    return render(request, "opie/_action_decided.html", {"action_id": action_id, "choice": choice,
                                                         "waiting": job["status"] == Job.Status.REQUIRES_ACTION})


APPROVALS_SHOWN = 100  # the newest; the page says how many more wait


@page
@require_GET
def approvals(request: HttpRequest) -> HttpResponse:
    """Every action waiting for the user, across their sessions and agents, newest first."""
    pending = actions_pending(user=request.user)
    return render(request, "opie/approvals.html", {"actions": _cards(pending[:APPROVALS_SHOWN]),
                                                   "total": pending.count(), "shown": APPROVALS_SHOWN})


# usage
def _usage_chart(days: list[dict[str, Any]], width: int = 600, height: int = 120) -> str:
    """Tokens per day as an SVG bar chart, drawn here: no script, no CDN."""
    top = max(d["total_tokens"] for d in days) or 1
    step = width / len(days)
    bars = "".join(
        f'<rect x="{i * step + 1:.1f}" y="{height - (d["total_tokens"] / top) * height:.1f}" width="{step - 2:.1f}" '
        f'height="{(d["total_tokens"] / top) * height:.1f}"><title>{d["day"]}: {d["total_tokens"]} tokens, '
        f'{d["runs"]} runs</title></rect>' for i, d in enumerate(days))
    return (f'<svg class="usage-chart" viewBox="0 0 {width} {height}" width="100%" height="{height}" role="img" '
            f'aria-label="tokens per day, last {len(days)} days">{bars}</svg>')


@page
@require_GET
def usage(request: HttpRequest) -> HttpResponse:
    """The user's own figures over the last 30 days: a chart per day, a table per agent and per model."""
    start, end = usage_range(None, None, today=timezone.now().date())
    report = {g: usage_rows_to_json(usage_report(user_id=request.user.pk, date_from=start, date_to=end, group_by=g), g)
              for g in ("day", "agent", "model")}
    days = usage_days(report["day"], start, end)
    return render(request, "opie/usage.html", {
        "chart": _usage_chart(days), "start": start, "end": end, "by_agent": report["agent"],
        "by_model": report["model"], "totals": usage_totals(report["day"])})


# vault uploads
@page
@require_POST
def vault_upload(request: HttpRequest) -> HttpResponse:
    upload = request.FILES.get("file")
    if upload is None:
        return render(request, "opie/_error_note.html", {"message": "Choose a file to upload."}, status=400)
    vault = vault_for(user=request.user)
    try:
        document, _ = document_upload(user=request.user, kb=vault, name=upload.name or "", data=upload.read(),
                                      content_type=upload.content_type or "")
    except DomainError as exc:
        return render(request, "opie/_error_note.html", {"message": exc.message}, status=exc.status)
    return render(request, "opie/_document.html", {"document": document})


@page
@require_GET
def vault_document(request: HttpRequest, document_id: str) -> HttpResponse:
    document = document_get(kb=vault_for(user=request.user), document_id=document_id)
    return render(request, "opie/_document.html", {"document": document})


# sessions
@page
def session_page(request: HttpRequest, session_id: str) -> HttpResponse:
    svc = AgentOSService(request.user)
    session = svc.get_session(session_id)
    fmt = request.GET.get("format")
    if fmt == "json":
        response = HttpResponse(json.dumps(session, indent=2), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="{session_id}.json"'
        return response
    if fmt == "md":
        lines = [f"# {session['title'] or session_id}", ""]
        for m in session["messages"]:
            lines += [f"**{m['role']}** ({m['created_at']}):", "", m["content"], ""]
        response = HttpResponse("\n".join(lines), content_type="text/markdown; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{slugify(session["title"]) or session_id}.md"'
        return response
    return render(request, "opie/session.html", {"session": session, "replies": _replies_by_job(request, session)})


@page
@require_POST
def session_rename_view(request: HttpRequest, session_id: str) -> HttpResponse:
    session = session_get_owned(user=request.user, session_id=session_id)
    try:
        session_rename(session=session, title=request.POST.get("title", ""))
    except DomainError:
        pass
    return redirect("opie:session", session_id=session_id)


@page
@require_POST
def session_delete_view(request: HttpRequest, session_id: str) -> HttpResponse:
    session = session_get_owned(user=request.user, session_id=session_id)
    agent_id = session.agent.public_id
    session_delete(session=session)
    return redirect("opie:chat", agent_id=agent_id)


# account
@page
def account(request: HttpRequest) -> HttpResponse:
    new_token = None
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "create_token":
            _, new_token = api_token_create(user=request.user, name=request.POST.get("name", "") or "web")
        elif action == "revoke_token":
            token = ApiToken.objects.filter(user=request.user, pk=request.POST.get("token", "0")).first()
            if token is None:
                raise Http404("token")
            api_token_revoke(token=token)
            return redirect("opie:account")
        elif action == "rotate_secret":
            webhook_secret_rotate(user=request.user)
            return redirect("opie:account")
    deliveries = (WebhookDelivery.objects.filter(owner=request.user).select_related("job")
                  .prefetch_related("attempts").order_by("-created_at")[:20])
    return render(request, "opie/account.html", {
        "tokens": ApiToken.objects.filter(user=request.user).order_by("-created_at"), "new_token": new_token,
        "secret": webhook_secret_get_or_create(user=request.user), "deliveries": deliveries})


__all__ = ["Document"]
