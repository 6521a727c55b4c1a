"""Chat session writes. Each invalidates, after commit, the session's cached
summary (`agentos_session_<public_id>`); so do the writes elsewhere that change
a session (a new message, a reply: apps.jobs), through `session_changed`."""
from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from apps.agents.models import Agent
from apps.cache import invalidate_on_commit, session_key
from apps.chat.models import ChatSession
from apps.common import DomainError, insert_new

MAX_TITLE = 200


def _title(title: str) -> str:
    if len(title) > MAX_TITLE:
        raise DomainError("invalid_input", f"title must be at most {MAX_TITLE} characters.")
    return title.strip()


def session_changed(*, session_id: str) -> None:
    """The session's summary changed (title, updated_at) or it is gone: drop it once this commits."""
    invalidate_on_commit([session_key(session_id)])


def session_create(*, user: AbstractBaseUser, agent: Agent, title: str = "",
                   session_id: str | None = None) -> ChatSession:
    """`session_id` keeps an id chosen elsewhere (AgentOS clients pick their own)."""
    # a new public id has no cache entry (misses are not cached): nothing to invalidate
    if session_id is not None:
        return insert_new(ChatSession(public_id=session_id[:40], owner=user, agent=agent, title=_title(title)))
    return insert_new(ChatSession(owner=user, agent=agent, title=_title(title)))


@transaction.atomic
def session_rename(*, session: ChatSession, title: str) -> ChatSession:
    session.title = _title(title)
    session.save(update_fields=["title", "updated_at"])
    session_changed(session_id=session.public_id)
    return session


@transaction.atomic
def session_delete(*, session: ChatSession) -> None:
    session_changed(session_id=session.public_id)
    session.delete()
