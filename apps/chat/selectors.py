from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import Case, IntegerField, Q, QuerySet, Value, When

from apps.cache import read, session_key
from apps.chat.models import ChatMessage, ChatSession
from apps.chat.presenters import session_to_dict
from apps.common import NotFound


@dataclass(frozen=True)
class SessionSummary:
    pk: int
    summary: dict[str, Any]  # session_to_dict


def session_summary_get_owned(*, user: AbstractBaseUser, session_id: str) -> SessionSummary:
    """A session's summary if `user` owns it, read through the cache
    (`agentos_session_<public_id>`, which keeps its owner for this check)."""
    def load() -> dict[str, Any] | None:
        session = ChatSession.objects.select_related("agent").filter(public_id=session_id).first()
        if session is None:
            return None
        return {"pk": session.pk, "owner_id": session.owner_id, "summary": session_to_dict(session)}

    entry = read(session_key(session_id), load)
    if entry is None or entry["owner_id"] != user.pk:
        raise NotFound("session")
    return SessionSummary(pk=entry["pk"], summary=entry["summary"])


def session_get_owned(*, user: AbstractBaseUser, session_id: str) -> ChatSession:
    session = ChatSession.objects.select_related("agent").filter(owner=user, public_id=session_id).first()
    if session is None:
        raise NotFound("session")
    return session


def session_list(*, user: AbstractBaseUser, agent_id: str | None = None) -> QuerySet[ChatSession]:
    sessions = ChatSession.objects.select_related("agent").filter(owner=user)
    if agent_id:
        sessions = sessions.filter(agent__public_id=agent_id)
    return sessions.order_by("-created_at", "-id")


def session_messages(*, session: ChatSession | int, through_job_id: int | None = None) -> QuerySet[ChatMessage]:
    """The transcript in conversation order: job by job (acceptance order), each
    user turn before its reply. Messages accepted while an earlier one still ran
    come after that one's reply, which is exactly the history each job runs on.

    `through_job_id` gives the input of that job's run: the exchanges that
    completed before it (a cancelled or failed message got no reply and is not
    history), then its own user message. `session` is the row or its pk."""
    messages = ChatMessage.objects.filter(session=session).select_related("job")
    if through_job_id is not None:
        messages = (messages.filter(job_id__lte=through_job_id)
                    .filter(Q(job__status="succeeded") | Q(job_id=through_job_id, role=ChatMessage.Role.USER)))
    turn = Case(When(role=ChatMessage.Role.USER, then=Value(0)), default=Value(1), output_field=IntegerField())
    return messages.annotate(turn=turn).order_by("job_id", "turn", "id")


# `session_messages(session=..., through_job_id=...)` as (role, content) pairs, in
# one statement: it is read at the start of every run, and composing the ORM
# query cost more CPU than PostgreSQL spends answering it. Same rule and order
# (tests compare the two).
_RUN_HISTORY_SQL = """
SELECT m.role, m.content
  FROM chat_chatmessage AS m JOIN jobs_job AS j ON j.id = m.job_id
 WHERE m.session_id = %(session)s AND m.job_id <= %(job)s
   AND (j.status = 'succeeded' OR (m.job_id = %(job)s AND m.role = 'user'))
 ORDER BY m.job_id, CASE WHEN m.role = 'user' THEN 0 ELSE 1 END, m.id
"""


def run_history(*, session_id: int, job_id: int) -> list[tuple[str, str]]:
    """The (role, content) turns a message job runs on: see `session_messages`."""
    with connection.cursor() as cursor:
        cursor.execute(_RUN_HISTORY_SQL, {"session": session_id, "job": job_id})
        return [(role, content) for role, content in cursor.fetchall()]
