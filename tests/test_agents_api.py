"""Agents over the REST API: CRUD, versioning and who may see what."""
from __future__ import annotations

import pytest

from apps.agents.models import Agent
from tests.factories import make_agent

pytestmark = pytest.mark.django_db


def test_create_agent_returns_it_with_its_id(api):
    response = api.post("/api/v1/agentos/agents/", {
        "name": "Support", "instructions": "Help.", "tools": ["calculator"],
        "model": {"provider": "local", "id": "echo", "options": {"latency_ms": 10}}},
        content_type="application/json")

    assert response.status_code == 201
    body = response.json()
    assert body["id"].startswith("agent-")
    assert body["model"] == {"provider": "local", "id": "echo", "options": {"latency_ms": 10}}
    assert body["version"] == 1 and body["visibility"] == "private" and body["is_owner"]
    assert Agent.objects.get(public_id=body["id"]).owner.username == "alice"


def test_list_shows_own_public_and_shared_agents_only(api, user, other_user):
    mine = make_agent(user, name="Mine")
    public = make_agent(other_user, name="Public", visibility="public")
    shared = make_agent(other_user, name="Shared", visibility="shared", shared_with=["alice"])
    make_agent(other_user, name="Private")
    make_agent(other_user, name="Shared elsewhere", visibility="shared")

    ids = {a["id"] for a in api.get("/api/v1/agentos/agents/").json()["agents"]}

    assert ids == {mine.public_id, public.public_id, shared.public_id}


def test_others_see_a_public_agent_but_not_its_instructions(api, other_user):
    public = make_agent(other_user, visibility="public", instructions="secret prompt")

    body = api.get(f"/api/v1/agentos/agents/{public.public_id}/").json()

    assert body["instructions"] is None and body["is_owner"] is False


def test_patch_bumps_version_and_changes_fields(api, agent):
    response = api.patch(f"/api/v1/agentos/agents/{agent.public_id}/", {"instructions": "New."},
                         content_type="application/json")

    assert response.status_code == 200
    assert response.json()["version"] == agent.version + 1
    assert response.json()["instructions"] == "New."


def test_someone_elses_private_agent_is_a_404_for_every_method(api, other_user):
    private = make_agent(other_user)
    url = f"/api/v1/agentos/agents/{private.public_id}/"

    for response in (api.get(url), api.patch(url, {"name": "x"}, content_type="application/json"),
                     api.delete(url)):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "agent_not_found"
    assert Agent.objects.filter(pk=private.pk, name="Helper").exists()


def test_only_the_owner_may_edit_a_public_agent(api, other_user):
    public = make_agent(other_user, visibility="public")

    response = api.patch(f"/api/v1/agentos/agents/{public.public_id}/", {"name": "mine now"},
                         content_type="application/json")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "not_owner"


def test_delete_removes_the_agent(api, agent):
    assert api.delete(f"/api/v1/agentos/agents/{agent.public_id}/").status_code == 204
    assert not Agent.objects.filter(pk=agent.pk).exists()


@pytest.mark.parametrize("payload, code", [
    ({}, "invalid_input"),
    ({"name": ""}, "invalid_input"),
    ({"name": "   "}, "invalid_input"),
    ({"name": 42}, "invalid_input"),
    ({"name": "A", "tools": ["rm_rf"]}, "unknown_tool"),
    ({"name": "A", "tools": "calculator"}, "invalid_input"),
    ({"name": "A", "model": {"provider": "skynet", "id": "x"}}, "unknown_provider"),
    ({"name": "A", "model": {"provider": "local", "id": "gpt-9"}}, "invalid_model"),
    ({"name": "A", "model": {"provider": "local", "id": "echo", "options": {"latency_ms": -1}}},
     "invalid_model_options"),
    ({"name": "A", "model": {"provider": "openai_like", "id": "m", "options": {"base_url": "file:///etc"}}},
     "invalid_model_options"),
    ({"name": "A", "visibility": "everyone"}, "invalid_input"),
])
def test_bad_agent_input_is_a_400_with_a_stable_code_and_writes_nothing(api, payload, code):
    response = api.post("/api/v1/agentos/agents/", payload, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert not Agent.objects.exists()


def test_patch_rejects_null_fields(api, agent):
    response = api.patch(f"/api/v1/agentos/agents/{agent.public_id}/", {"name": None},
                         content_type="application/json")

    assert response.status_code == 400
    agent.refresh_from_db()
    assert agent.name == "Helper" and agent.version == 1
