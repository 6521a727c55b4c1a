"""Who may see which knowledge base, and vector search over its chunks.

The rule: a user searches, lists and attaches only knowledge bases they own or
that are shared with them (or public). An agent retrieves from the knowledge
bases attached to it; someone allowed to use a shared agent gets the chunks
that agent retrieves for their question (as its sources), but cannot list,
search or read the knowledge base itself unless it is shared with them too.
"""
from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet
from pgvector.django import CosineDistance

from apps.common import NotFound
from apps.knowledge.embeddings import embed
from apps.knowledge.models import Chunk, Document, KnowledgeBase


def kb_list_visible(*, user: AbstractBaseUser) -> QuerySet[KnowledgeBase]:
    grant = (Q(owner=user) | Q(visibility=KnowledgeBase.Visibility.PUBLIC)
             | Q(visibility=KnowledgeBase.Visibility.SHARED, shared_with=user))
    return KnowledgeBase.objects.filter(grant).distinct()


def kb_get_visible(*, user: AbstractBaseUser, kb_id: str) -> KnowledgeBase:
    kb = kb_list_visible(user=user).filter(public_id=kb_id).first()
    if kb is None:
        raise NotFound("knowledge_base")
    return kb


def kb_get_owned(*, user: AbstractBaseUser, kb_id: str) -> KnowledgeBase:
    kb = KnowledgeBase.objects.filter(owner=user, public_id=kb_id).first()
    if kb is None:
        raise NotFound("knowledge_base")
    return kb


def document_get(*, kb: KnowledgeBase, document_id: str) -> Document:
    document = kb.documents.filter(public_id=document_id).defer("data").first()
    if document is None:
        raise NotFound("document")
    return document


def _ef_search(limit: int) -> int:
    return min(1000, max(100, limit * 10))  # pgvector caps hnsw.ef_search at 1000


def chunks_search(*, kb_ids: list[int], query: str, limit: int = 5) -> list[dict[str, Any]]:
    """The `limit` chunks nearest to `query` (cosine, through the HNSW index)."""
    if not kb_ids or not query.strip():
        return []
    vector = embed([query])[0]
    with transaction.atomic(), connection.cursor() as cursor:
        # An HNSW scan yields at most ef_search candidates (default 40) and only then
        # applies the WHERE (these knowledge bases, ready documents): with the default,
        # a filtered search, or any limit above 40, returns fewer than `limit` rows.
        # pgvector 0.6 has no iterative scans, so widen the candidate list for this
        # query only (set_config(..., true) is SET LOCAL: it ends with the transaction).
        cursor.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(_ef_search(limit))])
        rows = list(Chunk.objects.filter(knowledge_base_id__in=kb_ids, document__status=Document.Status.READY)
                    .annotate(distance=CosineDistance("embedding", vector))
                    .select_related("document", "knowledge_base").order_by("distance")[:limit])
    return [{"chunk_id": c.pk, "content": c.content, "score": round(1 - float(c.distance), 4), "index": c.index,
             "document_id": c.document.public_id, "document_name": c.document.name,
             "knowledge_base_id": c.knowledge_base.public_id} for c in rows]


def agent_knowledge_ids(*, agent: Any) -> list[int]:
    """The knowledge bases an agent retrieves from: those attached to it that
    its owner may still read (detaching or unsharing takes effect at once)."""
    attached = list(agent.knowledge_bases.values_list("pk", flat=True))
    if not attached:
        return []
    return list(kb_list_visible(user=agent.owner).filter(pk__in=attached).values_list("pk", flat=True))


def agent_knowledge_problems(*, agent: Any) -> list[str]:
    """Why the agent's knowledge is not current, for the agent sync; [] when it is.

    Current means: every knowledge base attached to the agent is still readable
    by its owner (else runs silently skip it), and every document in them is
    `ready`, i.e. embedded by the configured model into the chunks a run
    searches. A document still `pending` or `processing` is not searchable yet;
    a `failed` one never will be until it is uploaded again. (Which model
    embedded a chunk is not recorded: after changing AGENTOS_EMBEDDING_MODEL,
    upload the documents again.)"""
    readable = set(agent_knowledge_ids(agent=agent))
    problems = []
    for kb in agent.knowledge_bases.order_by("id"):
        if kb.pk not in readable:
            problems.append(f"{kb.public_id} is attached but its owner no longer shares it with the agent's owner")
            continue
        counts = dict(kb.documents.exclude(status=Document.Status.READY).values_list("status")
                      .annotate(n=Count("id")).order_by())
        waiting = counts.get(Document.Status.PENDING, 0) + counts.get(Document.Status.PROCESSING, 0)
        if waiting:
            problems.append(f"{kb.public_id}: {waiting} document(s) not embedded yet (pending or processing)")
        if counts.get(Document.Status.FAILED):
            problems.append(f"{kb.public_id}: {counts[Document.Status.FAILED]} document(s) failed to ingest")
    return problems
