from __future__ import annotations

from typing import Any, Iterable

from apps.chat.models import ChatMessage, ChatSession


def session_to_dict(session: ChatSession) -> dict[str, Any]:
    """A session's summary, as the API shows it."""
    return {
        "session_id": session.public_id,
        "agent_id": session.agent.public_id,
        "title": session.title,
        "created_at": session.created_at.isoformat(),
        "updated_at": session.updated_at.isoformat(),
    }


def message_to_dict(message: ChatMessage) -> dict[str, Any]:
    return {
        "id": message.public_id,
        "role": message.role,
        "content": message.content,
        "tool_calls": message.tool_calls or [],
        "sources": message.sources or [],
        "created_at": message.created_at.isoformat(),
        "job_id": message.job.public_id if message.job_id else None,
    }


def session_detail_to_dict(summary: dict[str, Any], messages: Iterable[ChatMessage]) -> dict[str, Any]:
    """`summary` is `session_to_dict`'s answer (possibly cached)."""
    return {**summary, "messages": [message_to_dict(m) for m in messages]}
