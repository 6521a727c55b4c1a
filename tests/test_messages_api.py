"""Sessions, send-message and jobs over the REST API (no worker: nothing runs yet)."""
from __future__ import annotations

import pytest

from apps.chat.models import ChatMessage, ChatSession
from apps.jobs.models import Job
from tests.factories import make_agent

pytestmark = pytest.mark.django_db


def send(api, **payload):
    return api.post("/api/v1/agentos/send-message/", payload, content_type="application/json")


def test_send_message_accepts_with_202_and_writes_message_and_job_together(api, agent,
                                                                          django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = send(api, agent_id=agent.public_id, message="Hello")

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["poll_url"] == f"/api/v1/agentos/jobs/{body['job_id']}/"
    job = Job.objects.get(public_id=body["job_id"])
    assert job.session.public_id == body["session_id"] and job.agent == agent
    user_message = ChatMessage.objects.get(session=job.session)
    assert (user_message.role, user_message.content, user_message.job) == ("user", "Hello", job)
    assert any(getattr(c, "__name__", "") == "<lambda>" for c in callbacks), \
        "the job is published once its transaction has committed, not before"
    assert job.enqueued_at is not None


def test_accepting_a_message_writes_its_rows_and_nothing_more(user, agent, django_capture_on_commit_callbacks):
    """The request path's cost: the queue caps (one statement), one statement per row it writes
    (its first event needs no lock), the session's row lock when it continues one, and, once it
    commits, its user's admission (the user's advisory lock and the admitting UPDATE)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.jobs.dispatch import ADMISSION_LOCK
    from apps.jobs.services import message_send

    def statements(**kwargs):
        with CaptureQueriesContext(connection) as ctx, django_capture_on_commit_callbacks(execute=True):
            job = message_send(user=user, agent=agent, **kwargs)
        sql = [q["sql"] for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]]
        return job, sorted(" ".join(q.split()[:3]).replace('"', "") for q in sql)

    job, first = statements(message="Hello")
    _, second = statements(message="Again", session=job.session)

    caps = ["SELECT COALESCE((SELECT max_queued"]
    admission = [f"SELECT pg_advisory_xact_lock({ADMISSION_LOCK}, {user.pk})", "WITH cap AS"]
    assert first == sorted(["INSERT INTO chat_chatmessage", "INSERT INTO chat_chatsession",
                            "INSERT INTO events_jobevent", "INSERT INTO jobs_job", *caps, *admission])
    assert second == sorted(["INSERT INTO chat_chatmessage", "INSERT INTO events_jobevent", "INSERT INTO jobs_job",
                             "SELECT chat_chatsession.id, chat_chatsession.public_id,", "UPDATE chat_chatsession SET",
                             *caps, *admission])


def test_a_message_whose_publish_fails_is_left_for_the_sweeper(api, agent, django_capture_on_commit_callbacks):
    from celery_app import app

    with django_capture_on_commit_callbacks() as callbacks:
        body = send(api, agent_id=agent.public_id, message="Hello").json()
    def use_broker(url: str) -> None:
        # drop the app's handles on its pools, not the pools: closing the real
        # broker's pool would break every later test that publishes
        app.conf.broker_url = url
        app._pool = None
        app.amqp._producer_pool = None

    broker = app.conf.broker_url
    use_broker("redis://127.0.0.1:1/0")  # nothing listens there
    try:
        for callback in callbacks:
            callback()
    finally:
        use_broker(broker)

    job = Job.objects.get(public_id=body["job_id"])
    assert job.status == "queued" and job.enqueued_at is None, "the sweeper re-sends jobs never enqueued"


def test_send_message_without_session_creates_one_titled_by_the_message(api, agent):
    body = send(api, agent_id=agent.public_id, message="Plan my week").json()

    assert ChatSession.objects.get(public_id=body["session_id"]).title == "Plan my week"


def test_send_message_into_an_existing_session(api, agent):
    session = api.post("/api/v1/agentos/create-session/", {"agent_id": agent.public_id, "title": "T"},
                       content_type="application/json").json()

    body = send(api, agent_id=agent.public_id, message="Hi", session_id=session["session_id"]).json()

    assert body["session_id"] == session["session_id"]


def test_job_is_readable_by_its_owner(api, agent):
    job_id = send(api, agent_id=agent.public_id, message="Hi").json()["job_id"]

    body = api.get(f"/api/v1/agentos/jobs/{job_id}/").json()

    assert body["job_id"] == job_id and body["status"] == "queued" and body["kind"] == "message"
    assert body["result"] is None and body["error"] is None and body["attempts"] == 0


@pytest.mark.parametrize("payload, status, code", [
    ({}, 400, "invalid_input"),
    ({"message": "hi"}, 400, "invalid_input"),
    ({"agent_id": "AGENT", "message": ""}, 400, "invalid_input"),
    ({"agent_id": "AGENT", "message": "   "}, 400, "invalid_input"),
    ({"agent_id": "AGENT", "message": 12}, 400, "invalid_input"),
    ({"agent_id": "AGENT", "message": ["a"]}, 400, "invalid_input"),
    ({"agent_id": "AGENT", "message": "x" * 32_001}, 413, "message_too_long"),
    ({"agent_id": "AGENT", "message": "nul\x00"}, 400, "invalid_input"),
    ({"agent_id": "agent-000000000000", "message": "hi"}, 404, "agent_not_found"),
    ({"agent_id": "AGENT", "message": "hi", "session_id": "sess-000000000000"}, 404, "session_not_found"),
])
def test_bad_send_message_input_is_refused_and_writes_nothing(api, agent, payload, status, code):
    payload = {k: (agent.public_id if v == "AGENT" else v) for k, v in payload.items()}

    response = send(api, **payload)

    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert not Job.objects.exists() and not ChatMessage.objects.exists() and not ChatSession.objects.exists()


def test_malformed_json_is_a_400_malformed_json(api):
    response = api.post("/api/v1/agentos/send-message/", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


def test_a_session_of_another_agent_is_refused_without_half_writes(api, user, agent):
    other_agent = make_agent(user, name="Other")
    session = api.post("/api/v1/agentos/create-session/", {"agent_id": other_agent.public_id},
                       content_type="application/json").json()

    response = send(api, agent_id=agent.public_id, message="hi", session_id=session["session_id"])

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "session_agent_mismatch"
    assert not Job.objects.exists() and not ChatMessage.objects.exists()


def test_another_users_session_job_and_private_agent_are_404(api, other_api, other_user):
    theirs = make_agent(other_user)
    sent = send(other_api, agent_id=theirs.public_id, message="mine").json()

    assert send(api, agent_id=theirs.public_id, message="hi").status_code == 404
    assert api.get(f"/api/v1/agentos/jobs/{sent['job_id']}/").status_code == 404
    assert api.get(f"/api/v1/agentos/sessions/{sent['session_id']}/").status_code == 404
    assert api.post("/api/v1/agentos/create-session/", {"agent_id": theirs.public_id},
                    content_type="application/json").status_code == 404
    assert api.get("/api/v1/agentos/sessions/").json()["sessions"] == []


def test_someone_may_chat_with_a_public_agent_in_their_own_session(api, other_user):
    public = make_agent(other_user, visibility="public")

    response = send(api, agent_id=public.public_id, message="hi")

    assert response.status_code == 202
    assert ChatSession.objects.get(public_id=response.json()["session_id"]).owner.username == "alice"


def test_sessions_list_is_newest_first_with_a_cursor_and_an_agent_filter(api, user, agent):
    other_agent = make_agent(user, name="Other")
    created = [api.post("/api/v1/agentos/create-session/", {"agent_id": agent.public_id, "title": f"s{i}"},
                        content_type="application/json").json()["session_id"] for i in range(5)]
    api.post("/api/v1/agentos/create-session/", {"agent_id": other_agent.public_id},
             content_type="application/json")

    first = api.get(f"/api/v1/agentos/sessions/?agent_id={agent.public_id}&limit=3").json()
    second = api.get(f"/api/v1/agentos/sessions/?agent_id={agent.public_id}&limit=3&cursor={first['next']}").json()

    listed = [s["session_id"] for s in first["sessions"] + second["sessions"]]
    assert listed == list(reversed(created))
    assert second["next"] is None


def test_a_forged_cursor_is_a_400(api):
    response = api.get("/api/v1/agentos/sessions/?cursor=bm9wZQ")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_cursor"


def test_no_token_bad_token_and_revoked_token_are_401(api, user):
    from django.test import Client

    from apps.accounts.models import ApiToken

    client = Client()
    assert client.get("/api/v1/agentos/agents/").status_code == 401
    assert client.get("/api/v1/agentos/agents/", HTTP_AUTHORIZATION="Bearer opie_nope").status_code == 401
    ApiToken.objects.filter(user=user).update(revoked_at="2026-01-01T00:00Z")
    response = api.get("/api/v1/agentos/agents/")
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"


def test_unknown_api_path_is_a_json_404(api):
    response = api.get("/api/v1/agentos/nothing-here/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_info_and_openapi_schema_and_docs_are_served(api, agent):
    info = api.get("/api/v1/agentos/info/").json()
    schema = api.get("/api/v1/agentos/openapi.json").json()

    assert info["enabled"] is True and info["agent_count"] == 1
    assert set(info["queues"]) == {"agents", "sync", "knowledge", "webhooks"}
    assert api.get("/api/v1/agentos/").json() == info
    assert "/api/v1/agentos/send-message/" in schema["paths"]
    docs = api.get("/api/v1/agentos/docs")
    assert docs.status_code == 200 and b"cdn.jsdelivr" not in docs.content


@pytest.mark.parametrize("path", ["agents/", "jobs/job-none/", "jobs/job-none/wait/", "jobs/job-none/events/",
                                  "knowledge/", "knowledge/vault/documents/"])
def test_disabled_agentos_answers_503(api, settings, agent, path):
    settings.AGENTOS_ENABLED = False

    response = api.get(f"/api/v1/agentos/{path}")

    assert response.status_code == 503
    assert response.json() == {"error": {"code": "agentos_disabled", "message":
                                         "The AgentOS integration is turned off (AGENTOS_ENABLED=False)."}}


def test_disabled_agentos_keeps_health_and_tells_web_users_why(client, settings, user, agent):
    settings.AGENTOS_ENABLED = False
    client.force_login(user)

    page = client.get("/agentos/")

    assert page.status_code == 503
    assert b"AgentOS is turned off" in page.content and b"AGENTOS_ENABLED=False" in page.content
    assert client.get("/healthz").status_code == 200
    settings.AGENTOS_ENABLED = True
    assert client.get("/agentos/").status_code == 200
