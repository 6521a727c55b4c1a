"""Ingest one document: parse, chunk, embed in batches, then write every chunk
and the document's `ready` status in one transaction (a re-run replaces the
chunks, so a redelivered job never duplicates them)."""
from __future__ import annotations

import logging
from typing import Callable

from django.db import transaction

from apps.knowledge.embeddings import embed
from apps.knowledge.models import Chunk, Document
from apps.knowledge.parsing import UnreadableDocument, chunk_text, extract_text

logger = logging.getLogger(__name__)
BATCH = 64


def document_ingest(*, document: Document, progress: Callable[[int, int], None] | None = None) -> int:
    """Returns the number of chunks; raises UnreadableDocument for a bad file."""
    Document.objects.filter(pk=document.pk).update(status=Document.Status.PROCESSING, error="")
    data = Document.objects.values_list("data", flat=True).get(pk=document.pk)
    chunks = chunk_text(extract_text(document.name, bytes(data)))
    vectors: list[list[float]] = []
    for start in range(0, len(chunks), BATCH):
        vectors.extend(embed(chunks[start:start + BATCH]))
        if progress is not None:
            progress(min(start + BATCH, len(chunks)), len(chunks))
    with transaction.atomic():
        Chunk.objects.filter(document=document).delete()
        Chunk.objects.bulk_create([Chunk(document=document, knowledge_base_id=document.knowledge_base_id, index=i,
                                         content=text, embedding=vector)
                                   for i, (text, vector) in enumerate(zip(chunks, vectors))], batch_size=500)
        Document.objects.filter(pk=document.pk).update(status=Document.Status.READY, chunk_count=len(chunks),
                                                       error="")
    return len(chunks)


def document_failed(*, document: Document, error: str) -> None:
    with transaction.atomic():
        Chunk.objects.filter(document=document).delete()
        Document.objects.filter(pk=document.pk).update(status=Document.Status.FAILED, error=error[:2000],
                                                       chunk_count=0)


__all__ = ["UnreadableDocument", "document_failed", "document_ingest"]
