from __future__ import annotations

from typing import Any

from apps.knowledge.models import Document, KnowledgeBase


def kb_to_dict(kb: KnowledgeBase, *, viewer: Any) -> dict[str, Any]:
    owned = kb.owner_id == viewer.pk
    return {
        "id": kb.public_id, "name": kb.name, "description": kb.description, "visibility": kb.visibility,
        "is_vault": kb.is_vault, "owner": kb.owner.username, "is_owner": owned,
        "shared_with": sorted(u.username for u in kb.shared_with.all()) if owned else [],
        "agent_ids": sorted(a.public_id for a in kb.agents.all() if owned or a.owner_id == viewer.pk),
        "document_count": kb.documents.count(),
        "created_at": kb.created_at.isoformat(), "updated_at": kb.updated_at.isoformat(),
    }


def document_to_dict(document: Document) -> dict[str, Any]:
    return {
        "id": document.public_id, "knowledge_base_id": document.knowledge_base.public_id, "name": document.name,
        "content_type": document.content_type, "size": document.size, "checksum": document.checksum,
        "status": document.status, "error": document.error or None, "chunk_count": document.chunk_count,
        "job_id": document.job.public_id if document.job_id else None,
        "created_at": document.created_at.isoformat(), "updated_at": document.updated_at.isoformat(),
    }
