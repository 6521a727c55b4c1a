"""Web views (the seed's `apps.opie.agentos.views`). The full UI grows here."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from apps.opie.agentos.service import AgentOSService


def home(request: HttpRequest) -> HttpResponse:
    return redirect("opie:dashboard")


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    svc = AgentOSService(request.user)
    return render(request, "opie/dashboard.html", {"info": svc.info(), "agents": svc.get_available_agents(),
                                                   "sessions": svc.list_sessions(limit=10)["sessions"]})
