"""/api/v1/agentos/knowledge/...: knowledge bases, documents (uploads are ingest jobs), search.

`vault` stands for the caller's own vault wherever a knowledge base id goes."""
from __future__ import annotations

from typing import Any, Literal, Optional

from django.conf import settings
from django.http import HttpRequest
from ninja import Field, File, Form, Router, Schema
from ninja.files import UploadedFile

from apps.agents.selectors import agent_get_owned
from apps.api.idempotency import idempotent
from apps.api.ratelimit import check_job_rate
from apps.api.schemas import ErrorOut, ObjectIn, omittable
from apps.common import DomainError, agentos_enabled_check
from apps.knowledge import services
from apps.knowledge.models import KnowledgeBase
from apps.knowledge.presenters import document_to_dict, kb_to_dict
from apps.knowledge.selectors import chunks_search, document_get, kb_get_visible, kb_list_visible

router = Router(tags=["knowledge"])
ERRORS: dict[int, Any] = {code: ErrorOut for code in (400, 401, 403, 404, 409, 413, 415, 429, 503)}


class KnowledgeBaseIn(ObjectIn):
    name: str = Field(..., min_length=1, max_length=200)
    description: str = Field("", max_length=2000)
    visibility: Literal["private", "shared", "public"] = "private"
    shared_with: Optional[list[str]] = Field(None, max_length=100)


class KnowledgeBasePatch(ObjectIn):
    """Every field may be omitted, none may be null."""
    name: str = omittable(min_length=1, max_length=200)
    description: str = omittable(max_length=2000)
    visibility: Literal["private", "shared", "public"] = omittable()
    shared_with: list[str] = omittable(max_length=100)


class KnowledgeBaseOut(Schema):
    id: str
    name: str
    description: str
    visibility: str
    is_vault: bool
    owner: str
    is_owner: bool
    shared_with: list[str]
    agent_ids: list[str]
    document_count: int
    created_at: str
    updated_at: str


class KnowledgeBaseList(Schema):
    knowledge_bases: list[KnowledgeBaseOut]


class DocumentOut(Schema):
    id: str
    knowledge_base_id: str
    name: str
    content_type: str
    size: int
    checksum: str
    status: Literal["pending", "processing", "ready", "failed"]
    error: Optional[str]
    chunk_count: int
    job_id: Optional[str]
    created_at: str
    updated_at: str


class DocumentList(Schema):
    documents: list[DocumentOut]


class SearchIn(ObjectIn):
    query: str = Field(..., min_length=1, max_length=4000)
    limit: int = Field(5, ge=1, le=50)


class SearchHit(Schema):
    content: str
    score: float
    index: int
    document_id: str
    document_name: str
    knowledge_base_id: str


class SearchOut(Schema):
    results: list[SearchHit]


class AttachIn(ObjectIn):
    agent_id: str = Field(..., max_length=40)


def _visible(request: HttpRequest, kb_id: str) -> KnowledgeBase:
    agentos_enabled_check()
    if kb_id == "vault":
        return services.vault_for(user=request.auth)  # type: ignore[attr-defined]
    return kb_get_visible(user=request.auth, kb_id=kb_id)  # type: ignore[attr-defined]


def _owned(request: HttpRequest, kb_id: str) -> KnowledgeBase:
    kb = _visible(request, kb_id)
    if kb.owner_id != request.auth.pk:  # type: ignore[attr-defined]
        raise DomainError("not_owner", "Only the owner can change this knowledge base.", status=403)
    return kb


@router.get("knowledge/", response={200: KnowledgeBaseList, **ERRORS})
def kb_list(request: HttpRequest) -> Any:
    agentos_enabled_check()
    rows = kb_list_visible(user=request.auth).select_related("owner").prefetch_related("shared_with", "agents")
    return {"knowledge_bases": [kb_to_dict(kb, viewer=request.auth) for kb in rows]}


@router.post("knowledge/", response={201: KnowledgeBaseOut, **ERRORS})
def kb_create(request: HttpRequest, payload: KnowledgeBaseIn) -> Any:
    agentos_enabled_check()
    return idempotent(request, lambda: (201, kb_to_dict(services.kb_create(user=request.auth, **payload.dict()),
                                                        viewer=request.auth)))


@router.get("knowledge/{kb_id}/", response={200: KnowledgeBaseOut, **ERRORS})
def kb_get(request: HttpRequest, kb_id: str) -> Any:
    return kb_to_dict(_visible(request, kb_id), viewer=request.auth)


@router.patch("knowledge/{kb_id}/", response={200: KnowledgeBaseOut, **ERRORS})
def kb_update(request: HttpRequest, kb_id: str, payload: KnowledgeBasePatch) -> Any:
    changes = payload.dict(exclude_unset=True)
    if any(value is None for key, value in changes.items()):
        raise DomainError("invalid_input", "fields may be omitted but not null.")
    return kb_to_dict(services.kb_update(kb=_owned(request, kb_id), **changes), viewer=request.auth)


@router.delete("knowledge/{kb_id}/", response={204: None, **ERRORS})
def kb_delete(request: HttpRequest, kb_id: str) -> Any:
    services.kb_delete(kb=_owned(request, kb_id))
    return 204, None


@router.post("knowledge/{kb_id}/documents/", response={200: DocumentOut, 202: DocumentOut, **ERRORS})
def documents_upload(request: HttpRequest, kb_id: str, file: UploadedFile = File(...),
                     callback_url: str = Form("")) -> Any:
    """Upload a file (multipart, field `file`): 202 and an ingest job on the `knowledge`
    queue; poll the document or its job. Idempotent by content: the same file again
    answers 200 with the existing document (no Idempotency-Key needed)."""
    kb = _owned(request, kb_id)
    check_job_rate(request)
    if file.size is not None and file.size > settings.AGENTOS_MAX_UPLOAD_BYTES:
        raise DomainError("file_too_large", f"files are limited to {settings.AGENTOS_MAX_UPLOAD_BYTES} bytes.",
                          status=413)

    document, created = services.document_upload(user=request.auth, kb=kb, name=file.name or "",  # type: ignore
                                                 data=file.read(), content_type=file.content_type or "",
                                                 callback_url=callback_url)
    return (202 if created else 200), document_to_dict(document)


@router.get("knowledge/{kb_id}/documents/", response={200: DocumentList, **ERRORS})
def documents_list(request: HttpRequest, kb_id: str) -> Any:
    kb = _visible(request, kb_id)
    rows = kb.documents.defer("data").select_related("knowledge_base", "job")
    return {"documents": [document_to_dict(d) for d in rows]}


@router.get("knowledge/{kb_id}/documents/{document_id}/", response={200: DocumentOut, **ERRORS})
def documents_get(request: HttpRequest, kb_id: str, document_id: str) -> Any:
    return document_to_dict(document_get(kb=_visible(request, kb_id), document_id=document_id))


@router.delete("knowledge/{kb_id}/documents/{document_id}/", response={204: None, **ERRORS})
def documents_delete(request: HttpRequest, kb_id: str, document_id: str) -> Any:
    services.document_delete(document=document_get(kb=_owned(request, kb_id), document_id=document_id))
    return 204, None


@router.post("knowledge/{kb_id}/search/", response={200: SearchOut, **ERRORS})
def search(request: HttpRequest, kb_id: str, payload: SearchIn) -> Any:
    kb = _visible(request, kb_id)
    hits = chunks_search(kb_ids=[kb.pk], query=payload.query, limit=payload.limit)
    return {"results": hits}


@router.post("knowledge/{kb_id}/agents/", response={200: KnowledgeBaseOut, **ERRORS})
def attach(request: HttpRequest, kb_id: str, payload: AttachIn) -> Any:
    """Attach to one of your agents: its runs retrieve from this knowledge base."""
    kb = _visible(request, kb_id)
    agent = agent_get_owned(user=request.auth, agent_id=payload.agent_id)  # type: ignore[arg-type]
    services.kb_attach(user=request.auth, kb=kb, agent=agent)
    return kb_to_dict(kb, viewer=request.auth)


@router.delete("knowledge/{kb_id}/agents/{agent_id}/", response={204: None, **ERRORS})
def detach(request: HttpRequest, kb_id: str, agent_id: str) -> Any:
    kb = _visible(request, kb_id)
    services.kb_detach(kb=kb, agent=agent_get_owned(user=request.auth, agent_id=agent_id))  # type: ignore[arg-type]
    return 204, None
