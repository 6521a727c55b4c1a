"""The seed's Python API works as written."""
from __future__ import annotations

import pytest

from apps.opie.agentos.config import agent_os_config
from apps.opie.agentos.service import AgentOSService
from tests.factories import make_agent

pytestmark = pytest.mark.django_db


def test_service_lists_sends_and_creates_sessions_for_its_user(user, other_user, agent):
    make_agent(other_user, name="Hidden")
    service = AgentOSService(user)

    agents = service.get_available_agents()
    session = service.create_session(agent_id=agent.public_id, title="Planning")
    accepted = service.send_message(agent_id=agent.public_id, session_id=session["session_id"], message="hi")

    assert [a["id"] for a in agents] == [agent.public_id]
    assert accepted["session_id"] == session["session_id"] and accepted["status"] == "queued"
    assert service.get_job(accepted["job_id"])["kind"] == "message"


def test_create_agent_from_django_gives_a_runnable_agno_agent(user, agent):
    from agno.agent import Agent as AgnoAgent
    from agno.run.base import RunStatus

    built = agent_os_config.create_agent_from_django(agent, user, "sess-x")
    output = built.run("ping", session_id="sess-x", user_id=str(user.pk))

    assert isinstance(built, AgnoAgent) and built.id == agent.public_id
    assert output.status == RunStatus.completed and output.content == "Echo #1: ping"


def test_initialize_agent_os_serves_the_users_agents(user, other_user, agent):
    from agno.os import AgentOS

    make_agent(other_user, name="Not yours")

    agent_os = agent_os_config.initialize_agent_os(user)

    assert isinstance(agent_os, AgentOS)
    assert [a.id for a in agent_os.agents] == [agent.public_id]
