"""The cache layer (apps.cache) against the real Redis: reads are served from it,
every write invalidates what it changes (permissions are never stale after a
write), and a Redis outage degrades to the database instead of failing requests.

These tests run outside a wrapping transaction (a read inside one bypasses the
cache, and invalidations run on commit), so they use a transactional database.
"""
from __future__ import annotations

import logging
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from apps.agents.models import Agent
from apps.agents.services import agent_update
from apps.agents.sync import agent_sync_one
from apps.cache import PERMS_PUBLIC, agent_key, perms_key, read_many, session_key
from apps.chat.models import ChatSession
from apps.chat.services import session_delete, session_rename
from apps.jobs.lifecycle import job_claim, job_succeed_message
from apps.jobs.models import Job
from apps.opie.agentos.service import AgentOSService
from tests.factories import make_agent, make_token, make_user

pytestmark = pytest.mark.django_db(transaction=True)
API = "/api/v1/agentos/"


def in_redis(key: str) -> bool:
    """Whether the key is really in Redis (not just what the cache API says)."""
    return bool(redis.Redis.from_url(settings.REDIS_URL).exists(cache.make_key(key)))


def queries_on(ctx: CaptureQueriesContext, table: str) -> list[str]:
    return [q["sql"] for q in ctx.captured_queries if f'"{table}"' in q["sql"]]


def agent_ids(client: Client) -> set[str]:
    response = client.get(f"{API}agents/")
    assert response.status_code == 200
    return {a["id"] for a in response.json()["agents"]}


def patch(client: Client, agent: Agent, **changes: Any) -> Any:
    response = client.patch(f"{API}agents/{agent.public_id}/", changes, content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


# keys


def test_keys_follow_the_agentos_type_identifier_pattern():
    assert agent_key("agent-1a2b") == "agentos_agent_agent-1a2b"
    assert perms_key(42) == "agentos_perms_42"
    assert PERMS_PUBLIC == "agentos_perms_public"
    assert session_key("sess-9f") == "agentos_session_sess-9f"


# hits


def test_second_agent_list_is_served_from_the_cache_without_a_query(user, other_user):
    mine = make_agent(user, name="Mine")
    public = make_agent(other_user, name="Public", visibility="public")
    svc = AgentOSService(user)

    first = svc.get_available_agents()
    with CaptureQueriesContext(connection) as ctx:
        second = svc.get_available_agents()

    assert second == first and [a["id"] for a in first] == [mine.public_id, public.public_id]
    assert len(ctx.captured_queries) == 0
    assert all(in_redis(k) for k in (perms_key(user.pk), PERMS_PUBLIC, agent_key(mine.public_id),
                                     agent_key(public.public_id)))


def test_second_agent_detail_over_the_api_touches_no_agent_table(api, user):
    agent = make_agent(user)
    first = api.get(f"{API}agents/{agent.public_id}/")

    with CaptureQueriesContext(connection) as ctx:
        second = api.get(f"{API}agents/{agent.public_id}/")

    assert second.status_code == first.status_code == 200 and second.json() == first.json()
    assert queries_on(ctx, "agents_agent") == [] and queries_on(ctx, "agents_agent_shared_with") == []
    assert in_redis(agent_key(agent.public_id))


def test_a_cached_agent_still_shows_its_instructions_only_to_its_owner(api, other_api, user):
    agent = make_agent(user, visibility="public", instructions="secret prompt")
    api.get(f"{API}agents/")  # cached by the owner's read

    theirs = other_api.get(f"{API}agents/{agent.public_id}/").json()
    mine = api.get(f"{API}agents/{agent.public_id}/").json()

    assert theirs["instructions"] is None and not theirs["is_owner"]
    assert mine["instructions"] == "secret prompt" and mine["is_owner"]


def test_second_session_read_is_served_from_the_cache(api, user):
    agent = make_agent(user)
    session = api.post(f"{API}create-session/", {"agent_id": agent.public_id, "title": "Plans"},
                       content_type="application/json").json()
    first = api.get(f"{API}sessions/{session['session_id']}/")

    with CaptureQueriesContext(connection) as ctx:
        second = api.get(f"{API}sessions/{session['session_id']}/")

    assert second.status_code == 200 and second.json() == first.json()
    assert second.json()["title"] == "Plans"
    assert queries_on(ctx, "chat_chatsession") == []  # the messages themselves are always read
    assert in_redis(session_key(session["session_id"]))


def test_someone_elses_cached_session_is_still_a_404(api, other_api, user):
    agent = make_agent(user)
    session_id = api.post(f"{API}create-session/", {"agent_id": agent.public_id},
                          content_type="application/json").json()["session_id"]
    assert api.get(f"{API}sessions/{session_id}/").status_code == 200
    assert in_redis(session_key(session_id))

    response = other_api.get(f"{API}sessions/{session_id}/")

    assert response.status_code == 404 and response.json()["error"]["code"] == "session_not_found"


# every write path invalidates


def test_editing_an_agent_shows_the_new_data_at_once(api, other_api, user):
    agent = make_agent(user, name="Old", visibility="public")
    assert other_api.get(f"{API}agents/{agent.public_id}/").json()["name"] == "Old"
    assert {a["name"] for a in api.get(f"{API}agents/").json()["agents"]} == {"Old"}

    patch(api, agent, name="New", model={"provider": "local", "id": "echo", "options": {"latency_ms": 5}})

    theirs = other_api.get(f"{API}agents/{agent.public_id}/").json()
    assert theirs["name"] == "New" and theirs["version"] == 2
    assert theirs["model"]["options"] == {"latency_ms": 5}
    assert [a["name"] for a in api.get(f"{API}agents/").json()["agents"]] == ["New"]


def test_revoking_sharing_takes_the_agent_away_at_once(api, other_api, user, other_user):
    agent = make_agent(user, visibility="shared", shared_with=["mallory"])
    assert agent.public_id in agent_ids(other_api)  # cached: mallory's permissions list it
    assert in_redis(perms_key(other_user.pk))

    patch(api, agent, shared_with=[])

    assert agent.public_id not in agent_ids(other_api)
    assert other_api.get(f"{API}agents/{agent.public_id}/").status_code == 404
    send = other_api.post(f"{API}send-message/", {"agent_id": agent.public_id, "message": "hi"},
                          content_type="application/json")
    assert send.status_code == 404


def test_sharing_an_agent_gives_it_to_the_new_user_at_once(api, other_api, user):
    agent = make_agent(user, visibility="shared")
    assert agent.public_id not in agent_ids(other_api)

    patch(api, agent, shared_with=["mallory"])

    assert agent.public_id in agent_ids(other_api)
    assert other_api.get(f"{API}agents/{agent.public_id}/").status_code == 200


def test_making_a_public_agent_private_hides_it_from_everyone_at_once(api, other_api, user):
    agent = make_agent(user, visibility="public")
    third = Client(HTTP_AUTHORIZATION=f"Bearer {make_token(make_user('trent'))}")
    assert agent.public_id in agent_ids(other_api) and agent.public_id in agent_ids(third)

    patch(api, agent, visibility="private")

    assert agent.public_id not in agent_ids(other_api) and agent.public_id not in agent_ids(third)
    assert agent.public_id in agent_ids(api)


def test_disabling_an_agent_hides_it_at_once(api, other_api, user):
    agent = make_agent(user, visibility="public")
    assert agent.public_id in agent_ids(other_api)

    patch(api, agent, enabled=False)

    assert agent.public_id not in agent_ids(other_api) and agent.public_id not in agent_ids(api)
    assert AgentOSService(user).info()["agent_count"] == 0


def test_a_new_public_agent_appears_for_everyone_at_once(api, other_api, other_user):
    assert agent_ids(api) == set()  # alice's (empty) permissions and the public list are cached

    agent = make_agent(other_user, visibility="public")

    assert agent_ids(api) == {agent.public_id}


def test_deleting_an_agent_drops_it_and_its_sessions_at_once(api, other_api, user):
    agent = make_agent(user, visibility="public")
    session_id = api.post(f"{API}create-session/", {"agent_id": agent.public_id},
                          content_type="application/json").json()["session_id"]
    assert api.get(f"{API}sessions/{session_id}/").status_code == 200
    assert agent.public_id in agent_ids(other_api)

    assert api.delete(f"{API}agents/{agent.public_id}/").status_code == 204

    assert agent_ids(other_api) == set() and agent_ids(api) == set()
    assert api.get(f"{API}agents/{agent.public_id}/").status_code == 404
    assert api.get(f"{API}sessions/{session_id}/").status_code == 404
    assert not in_redis(agent_key(agent.public_id)) and not in_redis(session_key(session_id))


def test_a_sync_that_bumps_the_version_shows_it_at_once(api, user):
    agent = make_agent(user)
    Agent.objects.filter(pk=agent.pk).update(config_hash="a-previous-configuration")
    assert api.get(f"{API}agents/{agent.public_id}/").json()["version"] == 1

    result = agent_sync_one(agent=Agent.objects.get(pk=agent.pk))

    assert result.changed and result.version == 2
    assert api.get(f"{API}agents/{agent.public_id}/").json()["version"] == 2


def test_renaming_and_deleting_a_session_show_at_once(api, user):
    agent = make_agent(user)
    session_id = api.post(f"{API}create-session/", {"agent_id": agent.public_id, "title": "Before"},
                          content_type="application/json").json()["session_id"]
    assert api.get(f"{API}sessions/{session_id}/").json()["title"] == "Before"

    session_rename(session=ChatSession.objects.get(public_id=session_id), title="After")
    assert api.get(f"{API}sessions/{session_id}/").json()["title"] == "After"

    session_delete(session=ChatSession.objects.get(public_id=session_id))
    assert api.get(f"{API}sessions/{session_id}/").status_code == 404


def test_a_new_message_and_its_reply_show_in_the_session_at_once(api, user):
    agent = make_agent(user)
    accepted = api.post(f"{API}send-message/", {"agent_id": agent.public_id, "message": "first"},
                        content_type="application/json").json()
    session_id = accepted["session_id"]
    before = api.get(f"{API}sessions/{session_id}/").json()  # cached

    second = api.post(f"{API}send-message/", {"agent_id": agent.public_id, "message": "second",
                                              "session_id": session_id}, content_type="application/json")
    assert second.status_code == 202
    after_send = api.get(f"{API}sessions/{session_id}/").json()
    assert after_send["updated_at"] > before["updated_at"]
    assert [m["content"] for m in after_send["messages"]] == ["first", "second"]

    job = job_claim(job_id=Job.objects.get(public_id=accepted["job_id"]).pk, worker="test")
    assert job is not None
    job_succeed_message(job=job, content="the reply", tool_calls=[], metrics={})

    after_reply = api.get(f"{API}sessions/{session_id}/").json()
    assert after_reply["updated_at"] > after_send["updated_at"]
    assert "the reply" in [m["content"] for m in after_reply["messages"]]


def test_agentos_renames_records_and_deletes_show_in_the_rest_api_at_once(api, user):
    from agno.session.agent import AgentSession
    from asgiref.sync import async_to_sync

    from apps.jobs.services import message_record
    from apps.opie.agentos.agno_db import DjangoSessionDb, current_user

    agent, db = make_agent(user), DjangoSessionDb()
    session_id = api.post(f"{API}create-session/", {"agent_id": agent.public_id},
                          content_type="application/json").json()["session_id"]

    def title() -> str:
        response = api.get(f"{API}sessions/{session_id}/")  # fills the cache
        assert in_redis(session_key(session_id))
        return response.json()["title"]

    assert title() == ""
    # a run recorded by AgentOS titles an untitled session, as the first message does
    session = ChatSession.objects.get(public_id=session_id)
    message_record(user=user, agent=agent, session=session, run_id="run-1", message="Trip to Oslo", reply="Ok.")
    assert title() == "Trip to Oslo"

    token = current_user.set(user)  # what the AgentOS server's auth middleware does per request
    try:
        async_to_sync(db.rename_session)(session_id, None, "Renamed in AgentOS")
        assert title() == "Renamed in AgentOS"
        async_to_sync(db.upsert_session)(AgentSession(session_id=session_id, agent_id=agent.public_id,
                                                      session_data={"session_name": "Named by agno"}))
        assert title() == "Named by agno"
        assert async_to_sync(db.delete_session)(session_id) is True
    finally:
        current_user.reset(token)

    assert api.get(f"{API}sessions/{session_id}/").status_code == 404


def test_an_admin_edit_of_sharing_reaches_permissions_at_once(client, other_api, user, other_user):
    agent = make_agent(user, visibility="shared", shared_with=["mallory"])
    assert agent.public_id in agent_ids(other_api)
    client.force_login(make_user("root", is_staff=True, is_superuser=True))

    response = client.post(f"/admin/agents/agent/{agent.pk}/change/", {
        "owner": user.pk, "name": agent.name, "description": "", "instructions": agent.instructions,
        "model_provider": "local", "model_id": "echo", "model_options": "{}", "tools": '["calculator"]',
        "visibility": "shared", "enabled": "on", "sync_status": "", "sync_error": "", "config_hash": "",
        "synced_at_0": "", "synced_at_1": ""})  # shared_with left empty: sharing revoked

    assert response.status_code == 302, response.content[:2000]
    assert agent.public_id not in agent_ids(other_api)


# transactions and races


def test_a_rolled_back_edit_leaves_the_cache_as_it_was(user):
    agent = make_agent(user, name="Kept")
    svc = AgentOSService(user)
    assert svc.get_agent(agent.public_id)["name"] == "Kept"

    with pytest.raises(RuntimeError), transaction.atomic():
        agent_update(agent=agent, name="Rolled back")
        raise RuntimeError("the request failed after the edit")

    assert in_redis(agent_key(agent.public_id))  # nothing was invalidated: nothing changed
    assert svc.get_agent(agent.public_id)["name"] == "Kept"


def test_a_read_inside_a_transaction_sees_its_own_write_and_never_fills_the_cache(user):
    agent = make_agent(user, name="Before")
    svc = AgentOSService(user)
    svc.get_agent(agent.public_id)

    with pytest.raises(RuntimeError), transaction.atomic():
        agent_update(agent=agent, name="Uncommitted")
        assert svc.get_agent(agent.public_id)["name"] == "Uncommitted"
        cache.delete(agent_key(agent.public_id))
        svc.get_agent(agent.public_id)
        assert not in_redis(agent_key(agent.public_id))  # uncommitted data is never published
        raise RuntimeError("roll back")

    assert svc.get_agent(agent.public_id)["name"] == "Before"


def test_a_read_racing_a_write_never_stores_what_it_read_before_the_write(user):
    agent = make_agent(user, name="Before")
    key = agent_key(agent.public_id)

    def load_then_lose_the_race(missing: list[str]) -> dict[str, Any]:
        stale = {key: {"name": "Before"}}  # read from the database ...
        agent_update(agent=Agent.objects.get(pk=agent.pk), name="After")  # ... then a write commits
        return stale

    assert read_many([key], load_then_lose_the_race)[key]["name"] == "Before"

    assert not in_redis(key)  # the write's invalidation took this reader's lease: nothing stored
    assert AgentOSService(user).get_agent(agent.public_id)["name"] == "After"


# outage


DEAD_REDIS = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_redis_outage_falls_back_to_the_database(api, other_api, user, other_user):
    shared = make_agent(user, name="Shared", visibility="shared", shared_with=["mallory"])
    public = make_agent(other_user, name="Public", visibility="public")
    session_id = api.post(f"{API}create-session/", {"agent_id": shared.public_id, "title": "Chat"},
                          content_type="application/json").json()["session_id"]
    warnings = Records()
    logging.getLogger("apps.cache").addHandler(warnings)
    try:
        with override_settings(CACHES=DEAD_REDIS):
            assert agent_ids(api) == {shared.public_id, public.public_id}
            assert api.get(f"{API}agents/{public.public_id}/").json()["name"] == "Public"
            assert api.get(f"{API}sessions/{session_id}/").json()["title"] == "Chat"
            assert api.get(f"{API}").status_code == 200

            # writes work and are seen at once: the database answers every read
            assert patch(api, shared, name="Renamed", shared_with=[])["name"] == "Renamed"
            assert agent_ids(other_api) == {public.public_id}
            assert other_api.get(f"{API}agents/{shared.public_id}/").status_code == 404
            sent = api.post(f"{API}send-message/", {"agent_id": shared.public_id, "message": "hi",
                                                    "session_id": session_id}, content_type="application/json")
            assert sent.status_code == 202  # the rate limiter fails open too
    finally:
        logging.getLogger("apps.cache").removeHandler(warnings)

    assert any(r.levelno == logging.WARNING and "cache unavailable" in r.getMessage() for r in warnings.records)
    # with Redis back, the cache serves the data the outage wrote, not what it held before
    assert agent_ids(other_api) == {public.public_id}
    assert api.get(f"{API}agents/{shared.public_id}/").json()["name"] == "Renamed"

