"""Every route, two users: someone else's object is a 404, for every method a route takes.

The route list comes from Django's URL resolver (the ninja API included), so a
new route is in the matrix the moment it is added. A route whose parameters are
not object ids must be named in ALLOWED below, with the reason; a route with a
parameter this file does not know fails the test until it is taught here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from apps.chat.services import session_create
from apps.jobs.models import JobAction
from apps.jobs.services import message_send
from apps.knowledge.services import document_upload, vault_for
from apps.schedules.models import Schedule
from apps.schedules.services import schedule_create
from apps.webhooks.models import InboundHook
from tests.factories import make_agent, make_token, make_user
from workers.execution import execute_message_job

pytestmark = pytest.mark.django_db

API = "api/v1/agentos/"
PAGES = "agentos/"
PARAM = re.compile(r"<(?:\w+:)?(\w+)>")

# Routes with parameters that are not someone's object, and why.
ALLOWED = {
    # the inbound hook is public by design (no token, no session): its Standard Webhooks
    # signature made with the hook's secret is the credential; tested in test_webhooks.py
    f"{API}hooks/<hook_id>/",
}
# Whole trees outside the matrix, and why.
ALLOWED_PREFIXES = (
    "admin/",     # Django admin: staff only (see test_the_admin_refuses_non_staff)
    "accounts/",  # Django's login / password views: the uidb64/token pair is its own credential
    "static/", "media/",
)
# API routes that answer without a token, by design.
PUBLIC_API = {f"{API}openapi.json", f"{API}docs"}  # the published schema and its viewer

# A valid body per (route, method), so that the object check, not validation, answers.
JSON_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    (f"{API}agents/<agent_id>/", "PATCH"): {"name": "Taken over"},
    (f"{API}knowledge/<kb_id>/", "PATCH"): {"name": "Taken over"},
    (f"{API}knowledge/<kb_id>/search/", "POST"): {"query": "secret plans"},
    (f"{API}knowledge/<kb_id>/agents/", "POST"): {"agent_id": "<own agent>"},
    (f"{API}jobs/<job_id>/actions/", "POST"): {"decisions": [{"action_id": "act-000000000000", "approved": True}]},
    (f"{API}schedules/<schedule_id>/", "PATCH"): {"message": "Taken over"},
}
UPLOADS = {f"{API}knowledge/<kb_id>/documents/"}
PAGE_FORM = {"message": "hi", "title": "x", "name": "x", "instructions": "", "model_provider": "local",
             "model_id": "echo", "visibility": "private", "action": "create_token"}


@dataclass(frozen=True)
class Route:
    template: str  # e.g. api/v1/agentos/agents/<agent_id>/
    params: tuple[str, ...]
    methods: tuple[str, ...] | None  # None: a Django view; its methods are found by asking

    @property
    def is_api(self) -> bool:
        return self.template.startswith(API)


def _walk(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            yield route, entry.callback


def _methods(callback: Any) -> tuple[str, ...] | None:
    """A ninja route's callback wraps its PathView (a closure over it): its operations say their methods."""
    for cell in getattr(callback, "__closure__", None) or ():
        operations = getattr(cell.cell_contents, "operations", None)
        if operations is not None:
            return tuple(sorted({m.upper() for op in operations for m in op.methods}))
    return None


def all_routes() -> list[Route]:
    routes: dict[str, Route] = {}  # ninja adds one pattern per operation of a path: one Route per path
    for template, callback in _walk(get_resolver().url_patterns):
        template = PARAM.sub(r"<\1>", template.lstrip("^").rstrip("$"))  # agents/<str:agent_id>/ -> <agent_id>
        if template.startswith(ALLOWED_PREFIXES) or template in routes:
            continue
        methods = _methods(callback) or (("GET",) if template.startswith(API) else None)
        routes[template] = Route(template, tuple(PARAM.findall(template)), methods)
    return list(routes.values())


ROUTES = all_routes()
OBJECT_ROUTES = [r for r in ROUTES if r.params and r.template not in ALLOWED]


def test_the_matrix_sees_the_routes_it_must():
    templates = {r.template for r in ROUTES}
    for expected in (f"{API}agents/<agent_id>/", f"{API}jobs/<job_id>/events/", f"{API}knowledge/<kb_id>/documents/"
                     "<document_id>/", f"{PAGES}session/<session_id>/", f"{PAGES}vault/documents/<document_id>/"):
        assert expected in templates
    assert {r.methods for r in ROUTES if r.template == f"{API}agents/<agent_id>/"} == {("DELETE", "GET", "PATCH")}
    assert len(OBJECT_ROUTES) >= 20


class World:
    """Alice's objects (the targets) and mallory's own (for routes with two ids)."""

    def __init__(self) -> None:
        self.alice, self.mallory = make_user("alice"), make_user("mallory")
        self.ids = {"alice": self._objects(self.alice), "mallory": self._objects(self.mallory)}
        self.missing = {"agent_id": "agent-000000000000", "session_id": "sess-000000000000",
                        "job_id": "job-000000000000", "kb_id": "kb-000000000000",
                        "document_id": "doc-000000000000", "hook_id": "hook-000000000000",
                        "action_id": "act-000000000000", "schedule_id": "sched-000000000000"}

    @staticmethod
    def _objects(user: Any) -> dict[str, str]:
        agent = make_agent(user, tool_policies={"calculator": "approve"})
        session = session_create(user=user, agent=agent)
        # a paused job, so the routes of its pending action are tried too
        job = message_send(user=user, agent=agent, message="/tool calculator 6*7", session=session)
        assert execute_message_job(job.pk) == "paused"
        action = JobAction.objects.get(job=job)
        vault = vault_for(user=user)
        document, _ = document_upload(user=user, kb=vault, name="plans.txt", data=f"{user} plans".encode())
        hook = InboundHook.objects.create(owner=user, agent=agent)
        schedule = schedule_create(owner=user, agent_id=agent.public_id, message="daily digest", cron="0 8 * * *")
        return {"schedule_id": schedule.public_id,
                "agent_id": agent.public_id, "session_id": session.public_id, "job_id": job.public_id,
                "kb_id": vault.public_id, "document_id": document.public_id, "hook_id": hook.public_id,
                "action_id": action.public_id}

    def url(self, route: Route, values: dict[str, str]) -> str:
        unknown = set(route.params) - set(values)
        assert not unknown, (f"{route.template}: teach tests/test_security_matrix.py how to make a {unknown} "
                             f"object, or list the route in ALLOWED with the reason")
        return "/" + PARAM.sub(lambda m: values[m.group(1)], route.template)


@pytest.fixture
def world() -> World:
    return World()


def _api_client(user: Any) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {make_token(user)}")


def _page_client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _request(client: Client, route: Route, method: str, url: str, world: World) -> Any:
    if route.is_api and route.template in UPLOADS and method == "POST":
        return client.post(url, {"file": SimpleUploadedFile("x.txt", b"mallory was here")})
    if route.is_api:
        body = dict(JSON_BODIES.get((route.template, method), {}))
        if body.get("agent_id") == "<own agent>":
            body["agent_id"] = world.ids["mallory"]["agent_id"]
        return client.generic(method, url, __import__("json").dumps(body) if body else "",
                              content_type="application/json")
    if method == "POST":
        return client.post(url, PAGE_FORM)
    return client.generic(method, url)


def _combinations(route: Route, world: World) -> Iterator[tuple[str, dict[str, str]]]:
    """All of alice's ids; then, per parameter, alice's id there and mallory's own elsewhere."""
    alice, mallory = world.ids["alice"], world.ids["mallory"]
    yield "all alice's", alice
    if len(route.params) > 1:
        for param in route.params:
            yield f"alice's {param} only", {**mallory, param: alice[param]}


def _route_id(route: Route) -> str:
    return route.template


@pytest.mark.parametrize("route", OBJECT_ROUTES, ids=_route_id)
def test_someone_elses_object_is_404_for_every_method(route, world):
    methods = route.methods or ("GET", "POST")
    client = _api_client(world.mallory) if route.is_api else _page_client(world.mallory)
    answered_404 = False
    for method in methods:
        # what the route says for an id that exists nowhere: the answer to match
        nowhere = _request(client, route, method, world.url(route, world.missing), world).status_code
        assert nowhere in (404, 405), f"{method} {route.template} with unknown ids: {nowhere}"
        for label, values in _combinations(route, world):
            response = _request(client, route, method, world.url(route, values), world)
            assert response.status_code == nowhere, (
                f"{method} {world.url(route, values)} ({label}) as mallory: {response.status_code}, "
                f"unknown ids give {nowhere}: {response.content[:300]!r}")
            if route.is_api and response.status_code == 404:
                assert response.json()["error"]["code"].endswith("not_found")
        answered_404 |= nowhere == 404
    assert answered_404, f"{route.template}: no method looks the object up"


def test_alices_objects_are_untouched_after_mallorys_tries(world):
    """The matrix ran PATCH, DELETE and cancel as mallory: nothing of alice's changed."""
    from apps.agents.models import Agent
    from apps.jobs.models import Job

    client = _api_client(world.mallory)
    alice = world.ids["alice"]
    for route in OBJECT_ROUTES:
        for method in route.methods or ("POST",):
            _request(client, route, method, world.url(route, alice), world)
    assert Agent.objects.get(public_id=alice["agent_id"]).name == "Helper"
    assert Job.objects.get(public_id=alice["job_id"]).status == "requires_action"
    assert JobAction.objects.get(public_id=alice["action_id"]).status == "pending"
    schedule = Schedule.objects.get(public_id=alice["schedule_id"])
    assert (schedule.enabled, schedule.message, schedule.runs.count()) == (True, "daily digest", 0)
    owner = _api_client(world.alice)
    assert owner.get(f"/{API}sessions/{alice['session_id']}/").status_code == 200
    assert owner.get(f"/{API}knowledge/{alice['kb_id']}/documents/{alice['document_id']}/").status_code == 200


def test_ids_in_request_bodies_are_404_too(world):
    """Object ids also travel in bodies and queries: same answer as in the path."""
    client = _api_client(world.mallory)
    alice, own = world.ids["alice"], world.ids["mallory"]
    attempts = [
        ("send-message/", {"agent_id": alice["agent_id"], "message": "hi"}),
        ("send-message/", {"agent_id": own["agent_id"], "session_id": alice["session_id"], "message": "hi"}),
        ("create-session/", {"agent_id": alice["agent_id"]}),
        ("hooks/", {"agent_id": alice["agent_id"]}),
        (f"knowledge/{own['kb_id']}/agents/", {"agent_id": alice["agent_id"]}),
    ]
    for path, body in attempts:
        response = client.post(f"/{API}{path}", body, content_type="application/json")
        assert response.status_code == 404, (path, body, response.content)
    page = _page_client(world.mallory)
    assert page.get(f"/{PAGES}chat/{own['agent_id']}/?session={alice['session_id']}").status_code == 404
    listed = client.get(f"/{API}jobs/?session_id={alice['session_id']}").json()["jobs"]
    assert listed == []


@pytest.mark.parametrize("route", [r for r in ROUTES if r.is_api and r.template not in PUBLIC_API | ALLOWED],
                         ids=_route_id)
def test_every_api_route_needs_a_token(route, world):
    client = Client()
    for method in route.methods:
        for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer opie_not-a-real-token"},
                        {"HTTP_AUTHORIZATION": "Basic YWxpY2U6cHc="}):
            response = client.generic(method, world.url(route, world.ids["alice"]), **headers)
            assert response.status_code == 401, (method, route.template, headers, response.status_code)
            assert response.json()["error"]["code"] == "unauthorized"


def test_a_logged_in_browser_session_is_not_an_api_credential(world):
    """The API takes bearer tokens only: a session cookie (no CSRF check there) opens nothing."""
    response = _page_client(world.alice).get(f"/{API}agents/")

    assert response.status_code == 401


@pytest.mark.parametrize("route", [r for r in ROUTES if r.template.startswith(PAGES)], ids=_route_id)
def test_every_page_sends_the_anonymous_to_the_login(route, world):
    client = Client()
    for method in ("GET", "POST"):
        response = client.generic(method, world.url(route, world.ids["alice"]))
        assert response.status_code == 302, (method, route.template, response.status_code)
        assert response["Location"].startswith("/accounts/login/?next=")


def test_staff_only_endpoints_refuse_non_staff(world):
    mallory = _api_client(world.mallory)

    sync = mallory.post(f"/{API}sync/", {}, content_type="application/json")
    info = mallory.get(f"/{API}info/").json()

    assert sync.status_code == 403 and sync.json()["error"]["code"] == "staff_only"
    assert "pool" not in info or info["pool"] is None
    from apps.jobs.models import Job
    assert not Job.objects.filter(kind="sync").exists()


def test_staff_get_the_sync_and_the_pool_stats(world, monkeypatch):
    monkeypatch.setattr("apps.opie.agentos.service.pool_stats", lambda: {"worker@x": {"hits": 1}})
    staff = make_user("root", is_staff=True)
    client = _api_client(staff)

    assert client.post(f"/{API}sync/", {"dry_run": True}, content_type="application/json").status_code == 202
    assert client.get(f"/{API}info/").json()["pool"] == {"worker@x": {"hits": 1}}


def test_the_admin_refuses_non_staff(world):
    from django.contrib import admin

    client = _page_client(world.mallory)
    urls = ["/admin/"] + [f"/admin/{m._meta.app_label}/{m._meta.model_name}/" for m in admin.site._registry]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url
