"""Regressions for what fuzzing the API against its OpenAPI schema found (tests/test_schemathesis.py)."""
from __future__ import annotations

import pytest

from apps.jobs.services import message_send

API = "/api/v1/agentos"
pytestmark = pytest.mark.django_db


def schema_of(api, name):
    return api.get(f"{API}/openapi.json").json()["components"]["schemas"][name]


@pytest.mark.parametrize("model", [[None, None], "local", 3, None])
def test_a_model_that_is_not_an_object_is_refused_not_replaced_by_defaults(api, model):
    response = api.post(f"{API}/agents/", {"name": "A", "model": model}, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_input"


def test_patching_part_of_the_model_uses_the_spec_defaults_instead_of_a_500(api, agent):
    response = api.patch(f"{API}/agents/{agent.public_id}/", {"model": {"id": "echo"}},
                         content_type="application/json")

    assert response.status_code == 200
    assert response.json()["model"] == {"provider": "local", "id": "echo", "options": {}}


def test_patch_fields_may_be_omitted_but_the_schema_does_not_offer_null(api, agent):
    agent_patch, kb_patch = schema_of(api, "AgentPatch"), schema_of(api, "KnowledgeBasePatch")

    for schema, field in ((agent_patch, "name"), (agent_patch, "visibility"), (agent_patch, "enabled"),
                          (kb_patch, "name"), (kb_patch, "shared_with")):
        text = str(schema["properties"][field])
        assert "null" not in text and "default" not in text, (field, text)
    assert "null" in str(agent_patch["properties"]["shared_with"])  # null means: shared with no one
    response = api.patch(f"{API}/agents/{agent.public_id}/", {"visibility": None}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_input"


def test_job_filters_and_wait_timeout_are_declared_in_the_schema(api):
    operations = api.get(f"{API}/openapi.json").json()["paths"]
    params = {p["name"]: p["schema"] for p in operations[f"{API}/jobs/"]["get"]["parameters"]}
    assert "succeeded" in str(params["status"]) and "ingest" in str(params["kind"])
    wait = {p["name"]: p["schema"] for p in operations[f"{API}/jobs/{{job_id}}/wait/"]["get"]["parameters"]}
    assert wait["timeout"]["exclusiveMinimum"] == 0 and wait["timeout"]["maximum"] == 60
    assert api.get(f"{API}/jobs/?kind=bogus").json()["error"]["code"] == "invalid_input"


def test_the_event_stream_schema_describes_one_event(api):
    operations = api.get(f"{API}/openapi.json").json()["paths"]
    content = operations[f"{API}/jobs/{{job_id}}/events/"]["get"]["responses"]["200"]["content"]
    event = content["text/event-stream"]["schema"]
    assert event["type"] == "object" and {"id", "event", "data"} <= set(event["properties"])


@pytest.mark.parametrize("last_event_id", ["²", "١٢", "𝟙"])
def test_a_non_ascii_digit_last_event_id_is_a_400_not_a_500(api, user, agent, last_event_id):
    job = message_send(user=user, agent=agent, message="Hello")

    response = api.get(f"{API}/jobs/{job.public_id}/events/", HTTP_LAST_EVENT_ID=last_event_id)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_input"
    response = api.get(f"{API}/jobs/{job.public_id}/events/", {"last_event_id": last_event_id})
    assert response.status_code == 400


def test_an_empty_message_is_refused_by_the_schema(api, agent):
    response = api.post(f"{API}/send-message/", {"agent_id": agent.public_id, "message": ""},
                        content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_input"
