"""Test data built through the same services the product uses."""
from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from apps.accounts.services import api_token_create
from apps.agents.services import agent_create


def make_user(username: str, **fields: Any) -> Any:
    return get_user_model().objects.create_user(username=username, password="pw", **fields)


def make_token(user: Any) -> str:
    return api_token_create(user=user, name="test")[1]


def make_agent(owner: Any, **fields: Any) -> Any:
    defaults: dict[str, Any] = {"name": "Helper", "instructions": "Be brief.", "tools": ["calculator"]}
    return agent_create(owner=owner, **{**defaults, **fields})
