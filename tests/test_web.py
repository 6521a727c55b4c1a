"""The web interface's views: login, permissions (someone else's object is a 404), CSRF, exports."""
from __future__ import annotations

import json
import re

from django.test import Client

from apps.accounts.models import ApiToken
from apps.chat.models import ChatSession
from apps.jobs.models import Job
from apps.jobs.services import message_send
from tests.factories import make_agent, make_user

# A script, stylesheet or image fetched from another host (a CDN): src/href to an absolute or
# protocol-relative URL. Random page content (a CSRF token) can spell "cdn", so match the markup.
EXTERNAL_ASSET = re.compile(rb'<(?:script|link|img)\b[^>]*\b(?:src|href)="(?:https?:)?//', re.IGNORECASE)


def test_pages_need_a_login(client, agent):
    for path in ("/agentos/", "/agentos/agents/", f"/agentos/chat/{agent.public_id}/", "/agentos/account/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next="), path
    login = client.get("/accounts/login/")
    assert login.status_code == 200 and b'for="id_username"' in login.content


def test_the_main_pages_render_for_their_user(alice, user, agent):
    job = message_send(user=user, agent=agent, message="hello")
    for path in ("/agentos/", "/agentos/agents/", f"/agentos/chat/{agent.public_id}/",
                 f"/agentos/chat/{agent.public_id}/?session={job.session.public_id}",
                 f"/agentos/session/{job.session.public_id}/", "/agentos/account/",
                 f"/agentos/agents/{agent.public_id}/edit/"):
        response = alice.get(path)
        assert response.status_code == 200, path
        assert b"/static/opie/htmx.min.js" in response.content, path
        assert not EXTERNAL_ASSET.search(response.content), f"{path} loads an asset from another host"
    chat = alice.get(f"/agentos/chat/{agent.public_id}/?session={job.session.public_id}").content.decode()
    assert "hello" in chat and "Queued — waiting for a worker" in chat, "a reply still queued says so"


def test_someone_elses_agent_session_job_and_document_are_404(alice, mallory, user, other_user, agent):
    job = message_send(user=user, agent=agent, message="private")
    session = job.session.public_id
    for path in (f"/agentos/chat/{agent.public_id}/", f"/agentos/session/{session}/",
                 f"/agentos/session/{session}/?format=json", f"/agentos/jobs/{job.public_id}/reply/",
                 f"/agentos/jobs/{job.public_id}/events/", f"/agentos/agents/{agent.public_id}/edit/",
                 "/agentos/vault/documents/doc-000000000000/"):
        response = mallory.get(path)
        assert response.status_code == 404, path
        assert b"Not found" in response.content
    assert mallory.post(f"/agentos/jobs/{job.public_id}/cancel/").status_code == 404
    assert mallory.post(f"/agentos/session/{session}/delete/").status_code == 404
    assert mallory.post(f"/agentos/chat/{agent.public_id}/send/", {"message": "hi"}).status_code == 404
    mallorys_agent = make_agent(other_user)
    assert mallory.post(f"/agentos/chat/{mallorys_agent.public_id}/send/",
                        {"message": "into alice's session", "session_id": session}).status_code == 404
    assert ChatSession.objects.filter(public_id=session).exists()
    assert alice.get(f"/agentos/chat/{mallorys_agent.public_id}/?session={session}").status_code == 404


def test_forms_need_a_csrf_token(user, agent):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    refused = client.post(f"/agentos/chat/{agent.public_id}/send/", {"message": "hi"})

    assert refused.status_code == 403 and b"Form expired" in refused.content
    assert not Job.objects.exists()
    page = client.get(f"/agentos/chat/{agent.public_id}/")
    token = page.cookies["csrftoken"].value
    sent = client.post(f"/agentos/chat/{agent.public_id}/send/", {"message": "hi"}, HTTP_X_CSRFTOKEN=token)
    assert sent.status_code == 200 and Job.objects.count() == 1


def test_sending_from_the_chat_makes_a_job_and_a_live_reply_placeholder(alice, agent):
    response = alice.post(f"/agentos/chat/{agent.public_id}/send/", {"message": "hello"})

    job = Job.objects.get()
    html = response.content.decode()
    assert f'data-events="/agentos/jobs/{job.public_id}/events/"' in html
    assert f'value="{job.session.public_id}" hx-swap-oob="true"' in html
    assert '<div class="content" aria-live="off"></div>' in html  # where the streamed text grows
    bad = alice.post(f"/agentos/chat/{agent.public_id}/send/", {"message": "   "})
    assert bad.status_code == 400 and b"message must be a non-empty string" in bad.content


def test_a_session_can_be_renamed_exported_and_deleted(alice, user, agent):
    session = message_send(user=user, agent=agent, message="export me").session

    alice.post(f"/agentos/session/{session.public_id}/rename/", {"title": "Renamed"})
    markdown = alice.get(f"/agentos/session/{session.public_id}/?format=md")
    exported = json.loads(alice.get(f"/agentos/session/{session.public_id}/?format=json").content)

    assert markdown["Content-Type"].startswith("text/markdown") and b"# Renamed" in markdown.content
    assert b"export me" in markdown.content
    assert exported["title"] == "Renamed" and exported["messages"][0]["content"] == "export me"
    deleted = alice.post(f"/agentos/session/{session.public_id}/delete/")
    assert deleted.status_code == 302 and not ChatSession.objects.filter(pk=session.pk).exists()


def test_tokens_are_shown_once_and_revocable_only_by_their_owner(alice, mallory, user, other_user):
    created = alice.post("/agentos/account/", {"action": "create_token", "name": "laptop"}).content.decode()
    token = ApiToken.objects.get(user=user, name="laptop")
    raw = created.split('<code id="new-token">')[1].split("</code>")[0]
    assert raw.startswith(token.prefix)
    assert raw not in alice.get("/agentos/account/").content.decode(), "shown once"

    assert mallory.post("/agentos/account/", {"action": "revoke_token", "token": token.pk}).status_code == 404
    alice.post("/agentos/account/", {"action": "revoke_token", "token": token.pk})
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_rotating_the_webhook_secret_in_the_account_page_changes_it(alice, mallory, user, other_user):
    from apps.webhooks.models import WebhookSecret

    def shown(client: Client) -> str:
        page = client.get("/agentos/account/").content.decode()
        return page.split('<code id="webhook-secret">')[1].split("</code>")[0]

    before, theirs = shown(alice), shown(mallory)

    rotated = alice.post("/agentos/account/", {"action": "rotate_secret"})

    after = shown(alice)
    stored = WebhookSecret.objects.get(user=user)
    assert rotated.status_code == 302 and rotated["Location"] == "/agentos/account/"
    assert after != before and after.startswith("whsec_")
    assert stored.secret == after and stored.rotated_at is not None  # new callbacks are signed with it
    assert WebhookSecret.objects.get(user=other_user).secret == theirs == shown(mallory)  # nobody else's


def test_only_the_owner_configures_an_agent_and_saving_bumps_the_version(alice, user, other_user):
    agent = make_agent(user, visibility="public")
    stranger = Client()
    stranger.force_login(make_user("bob"))
    assert stranger.get(f"/agentos/agents/{agent.public_id}/edit/").status_code == 404

    saved = alice.post(f"/agentos/agents/{agent.public_id}/edit/", {
        "name": "Renamed", "description": "d", "instructions": "Be kind.", "tools": ["calculator", "current_time"],
        "visibility": "shared", "shared_with": "mallory", "model_provider": "local", "model_id": "echo"})

    assert saved.status_code == 302
    agent.refresh_from_db()
    assert agent.name == "Renamed" and agent.version == 2 and agent.tools == ["calculator", "current_time"]
    assert list(agent.shared_with.values_list("username", flat=True)) == ["mallory"]
    invalid = alice.post(f"/agentos/agents/{agent.public_id}/edit/", {
        "name": "X", "tools": ["rm_rf"], "visibility": "private", "model_provider": "local", "model_id": "echo"})
    assert invalid.status_code == 200 and b'role="alert"' in invalid.content


def test_the_app_has_its_own_404_page(alice):
    response = alice.get("/agentos/nowhere/")
    assert response.status_code == 404 and b"Back to the dashboard" in response.content


def test_an_unexpected_error_is_the_apps_500_page_or_a_json_error_under_the_api(user, settings):
    settings.ROOT_URLCONF = "tests.boom_urls"
    client = Client(raise_request_exception=False)
    client.force_login(user)

    page = client.get("/agentos/boom/")
    api = client.get("/api/v1/agentos/boom/")

    assert page.status_code == 500 and b"Server error" in page.content and b"Back to the dashboard" in page.content
    assert b"an unexpected failure" not in page.content  # no traceback or message leaks
    assert api.status_code == 500 and api.json()["error"]["code"] == "internal_error"


def test_a_refusal_is_the_apps_403_page(alice, settings):
    settings.ROOT_URLCONF = "tests.boom_urls"

    response = alice.get("/agentos/forbidden/")

    assert response.status_code == 403 and b"Not allowed" in response.content
