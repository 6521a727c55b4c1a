"""Web views (the seed's `apps.opie.agentos.views`). The full UI grows here."""
from __future__ import annotations

from functools import wraps
from typing import Any, Callable

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from apps.opie.agentos.service import AgentOSService


def home(request: HttpRequest) -> HttpResponse:
    return redirect("opie:dashboard")


def agentos_enabled(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """With AGENTOS_ENABLED=False every AgentOS page says so (503), and nothing runs."""
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not settings.AGENTOS_ENABLED:
            return render(request, "opie/error.html", {
                "status": 503, "title": "AgentOS is turned off",
                "detail": "The administrator has turned the AgentOS integration off (AGENTOS_ENABLED=False). "
                          "Agents, chats and sessions are unavailable until it is turned back on."}, status=503)
        return view(request, *args, **kwargs)
    return wrapped


@agentos_enabled
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    svc = AgentOSService(request.user)
    return render(request, "opie/dashboard.html", {"info": svc.info(), "agents": svc.get_available_agents(),
                                                   "sessions": svc.list_sessions(limit=10)["sessions"]})
