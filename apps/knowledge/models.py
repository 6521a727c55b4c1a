"""Knowledge bases, the documents in a user's vault, and their chunks in pgvector.

Chunks live in our own table (`knowledge_chunk`, a `vector(384)` column with an
HNSW index) in the same PostgreSQL database, not in agno's PgVector tables:
a document's status and its chunks change in one transaction, deleting a
document or knowledge base cascades to its chunks, permission checks are
plain joins, and the schema is under Django migrations like everything else.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models
from pgvector.django import HnswIndex, VectorField

from apps.common import public_id

EMBEDDING_DIMENSIONS = 384


def _kb_id() -> str:
    return public_id("kb")


def _document_id() -> str:
    return public_id("doc")


class KnowledgeBase(models.Model):
    class Visibility(models.TextChoices):
        PRIVATE = "private"
        SHARED = "shared"  # the owner plus `shared_with`
        PUBLIC = "public"

    public_id = models.CharField(max_length=40, unique=True, default=_kb_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="knowledge_bases")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.PRIVATE)
    shared_with = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="shared_knowledge")
    # agents that retrieve from this knowledge base on every run
    agents = models.ManyToManyField("agents.Agent", blank=True, related_name="knowledge_bases")
    # the user's vault: where files uploaded from the chat go; one per user
    is_vault = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["owner"], condition=models.Q(is_vault=True),
                                               name="one_vault_per_user")]

    def __str__(self) -> str:
        return f"{self.name} ({self.public_id})"


class Document(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSING = "processing"
        READY = "ready"
        FAILED = "failed"

    public_id = models.CharField(max_length=40, unique=True, default=_document_id, editable=False)
    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="documents")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="documents")
    name = models.CharField(max_length=255)
    content_type = models.CharField(max_length=100, blank=True, default="")
    size = models.PositiveBigIntegerField(default=0)
    checksum = models.CharField(max_length=64)  # sha256 of the bytes: the same file is ingested once
    data = models.BinaryField()  # the file itself, so any worker can ingest it
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True, default="")
    chunk_count = models.PositiveIntegerField(default=0)
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["knowledge_base", "checksum"], name="one_copy_per_kb")]

    def __str__(self) -> str:
        return self.name


class Chunk(models.Model):
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    content = models.TextField()
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS)

    class Meta:
        ordering = ["document_id", "index"]
        constraints = [models.UniqueConstraint(fields=["document", "index"], name="one_chunk_per_position")]
        indexes = [HnswIndex(name="chunk_embedding_hnsw", fields=["embedding"], m=16, ef_construction=64,
                             opclasses=["vector_cosine_ops"])]
