"""Writing knowledge: knowledge bases, uploads (an ingest job each), deletes, attaching to agents."""
from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F

from apps.agents.models import Agent
from apps.agents.services import agent_create
from apps.cache import agent_key, invalidate_on_commit
from apps.common import DomainError
from apps.jobs.models import Job
from apps.jobs.services import job_create
from apps.knowledge.models import Document, KnowledgeBase
from apps.knowledge.parsing import UnreadableDocument, file_type
from apps.webhooks.services import callback_url_validate

VAULT_NAME = "My vault"


def _validate_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise DomainError("invalid_input", "name must be 1 to 200 characters.")
    return name.strip()


def _apply_sharing(kb: KnowledgeBase, visibility: str | None, shared_with: list[str] | None) -> None:
    if visibility is not None:
        if visibility not in KnowledgeBase.Visibility.values:
            raise DomainError("invalid_visibility", "visibility must be private, shared or public.")
        kb.visibility = visibility
    if shared_with is not None:
        users = list(get_user_model().objects.filter(username__in=shared_with))
        if len(users) != len(set(shared_with)):
            raise DomainError("unknown_user", "shared_with names a user that does not exist.")
        kb.shared_with.set(users)


@transaction.atomic
def kb_create(*, user: AbstractBaseUser, name: str, description: str = "", visibility: str = "private",
              shared_with: list[str] | None = None) -> KnowledgeBase:
    kb = KnowledgeBase(owner=user, name=_validate_name(name), description=description or "")
    _apply_sharing(kb, visibility, None)
    kb.save()
    _apply_sharing(kb, None, shared_with)
    return kb


@transaction.atomic
def kb_update(*, kb: KnowledgeBase, **changes: Any) -> KnowledgeBase:
    if "name" in changes and changes["name"] is not None:
        kb.name = _validate_name(changes["name"])
    if changes.get("description") is not None:
        kb.description = changes["description"]
    _apply_sharing(kb, changes.get("visibility"), None)
    kb.save()
    _apply_sharing(kb, None, changes.get("shared_with"))
    _bump_agents(kb)  # who may read it changed: agents rebuild
    return kb


def kb_delete(*, kb: KnowledgeBase) -> None:
    """The vault is refused: deleting it would leave the vault agent with no knowledge
    base (the next upload makes a new, empty vault it is not attached to)."""
    if kb.is_vault:
        raise DomainError("vault_not_deletable", "Your vault cannot be deleted; delete its documents instead.",
                          status=409)
    with transaction.atomic():
        _bump_agents(kb)
        kb.delete()  # documents and chunks cascade


def vault_for(*, user: AbstractBaseUser) -> KnowledgeBase:
    """The user's vault, where files uploaded from the chat go (made on first use)."""
    try:
        with transaction.atomic():
            kb, _ = KnowledgeBase.objects.get_or_create(owner=user, is_vault=True, defaults={"name": VAULT_NAME})
    except IntegrityError:  # two first uploads at once
        kb = KnowledgeBase.objects.get(owner=user, is_vault=True)
    return kb


def document_upload(*, user: AbstractBaseUser, kb: KnowledgeBase, name: str, data: bytes,
                    content_type: str = "", callback_url: str = "") -> tuple[Document, bool]:
    """Store the file and queue its ingestion (queue `knowledge`). The same bytes
    uploaded again to the same knowledge base return the existing document
    (`created` False): no second copy, no duplicate chunks."""
    if kb.owner_id != user.pk:
        raise DomainError("not_owner", "Only the owner can add documents to this knowledge base.", status=403)
    name = (name or "").strip()[:255]
    try:
        file_type(name)
    except UnreadableDocument as exc:
        raise DomainError("unsupported_file_type", str(exc), status=415) from exc
    if len(data) > settings.AGENTOS_MAX_UPLOAD_BYTES:
        raise DomainError("file_too_large", f"files are limited to {settings.AGENTOS_MAX_UPLOAD_BYTES} bytes.",
                          status=413)
    if callback_url:
        callback_url_validate(url=callback_url)
    checksum = hashlib.sha256(data).hexdigest()
    existing = kb.documents.filter(checksum=checksum).defer("data").first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            document = Document.objects.create(knowledge_base=kb, owner=user, name=name,
                                               content_type=content_type[:100], size=len(data), checksum=checksum,
                                               data=data)
            job = job_create(owner=user, kind=Job.Kind.INGEST, callback_url=callback_url,
                             input={"document_id": document.public_id, "knowledge_base_id": kb.public_id})
            Document.objects.filter(pk=document.pk).update(job=job)
            document.job = job
    except IntegrityError:
        # the same bytes uploaded at the same moment: both saw no copy, the other insert
        # committed first (one_copy_per_kb); answer as the duplicate path does
        existing = kb.documents.filter(checksum=checksum).defer("data").first()
        if existing is None:
            raise
        return existing, False
    return document, True


@transaction.atomic
def document_delete(*, document: Document) -> None:
    _bump_agents(document.knowledge_base)
    document.delete()  # its chunks cascade


def _new_versions(agents: Any) -> None:
    """These agents changed: a new version (warm pools drop them) and no stale cached snapshot."""
    invalidate_on_commit([agent_key(public) for public in agents.values_list("public_id", flat=True)])
    agents.update(version=F("version") + 1)


def _bump_agents(kb: KnowledgeBase) -> None:
    """Agents that retrieve from `kb` get a new version: warm pools drop them."""
    _new_versions(Agent.objects.filter(knowledge_bases=kb))


@transaction.atomic
def kb_attach(*, user: AbstractBaseUser, kb: KnowledgeBase, agent: Agent) -> None:
    """`kb` must be readable by the user (the selector checked it) and the agent theirs."""
    kb.agents.add(agent)
    _new_versions(Agent.objects.filter(pk=agent.pk))


@transaction.atomic
def kb_detach(*, kb: KnowledgeBase, agent: Agent) -> None:
    kb.agents.remove(agent)
    _new_versions(Agent.objects.filter(pk=agent.pk))


def vault_agent_ensure(*, user: AbstractBaseUser) -> Agent | None:
    """With AGENTOS_INCLUDE_VAULT_AGENTS, every user has a "My vault" agent that
    answers from their own vault (made on first listing). Off, there is none to see."""
    if not settings.AGENTOS_INCLUDE_VAULT_AGENTS:
        return None
    existing = Agent.objects.filter(owner=user, is_vault=True).first()
    if existing is not None:
        return existing
    vault = vault_for(user=user)
    with transaction.atomic():
        KnowledgeBase.objects.select_for_update().get(pk=vault.pk)  # one vault agent, even on concurrent first use
        existing = Agent.objects.filter(owner=user, is_vault=True).first()
        if existing is not None:
            return existing
        agent = agent_create(owner=user, name=VAULT_NAME, description="Answers from the files in your vault.",
                             instructions="Answer from the user's own files and cite them as [n].")
        Agent.objects.filter(pk=agent.pk).update(is_vault=True)
        vault.agents.add(agent)
        _new_versions(Agent.objects.filter(pk=agent.pk))
    return agent
