"""Vector search through the HNSW index returns `limit` rows even with a WHERE filter."""
from __future__ import annotations

import numpy as np
import pytest
from django.db import connection
from pgvector.django import CosineDistance

from apps.knowledge.models import Chunk, Document
from apps.knowledge.selectors import chunks_search
from apps.knowledge.services import kb_create
from tests.fake_openai import FakeOpenAI


@pytest.fixture
def openai_embeddings(settings):
    """Queries are embedded by the fake OpenAI server: no model to load."""
    with FakeOpenAI() as fake:
        settings.AGENTOS_EMBEDDING_PROVIDER = "openai"
        settings.OPENAI_API_KEY = "sk-embed-test"
        settings.OPENAI_BASE_URL = fake.url
        yield fake


def fill(kb, count: int, rng: np.random.Generator) -> None:
    document = Document.objects.create(knowledge_base=kb, owner=kb.owner, name=f"{kb.name}.txt", checksum=kb.name,
                                       data=b"", status=Document.Status.READY, chunk_count=count)
    vectors = rng.normal(size=(count, 384))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    Chunk.objects.bulk_create([Chunk(document=document, knowledge_base=kb, index=i, content=f"{kb.name} {i}",
                                     embedding=v.tolist()) for i, v in enumerate(vectors)], batch_size=500)


@pytest.mark.django_db
def test_a_filtered_search_through_the_hnsw_index_still_returns_limit_rows(user, openai_embeddings):
    rng = np.random.default_rng(7)
    mine, other = kb_create(user=user, name="mine"), kb_create(user=user, name="other")
    fill(mine, 1500, rng)
    fill(other, 1500, rng)
    with connection.cursor() as cursor:  # with statistics the planner takes the HNSW index, as it does in production
        cursor.execute("ANALYZE knowledge_chunk")
        cursor.execute("ANALYZE knowledge_document")
    plan = (Chunk.objects.filter(knowledge_base_id__in=[mine.pk], document__status="ready")
            .order_by(CosineDistance("embedding", [1.0] + [0.0] * 383))[:50].explain())
    assert "chunk_embedding_hnsw" in plan, "the test is only meaningful through the HNSW index"

    hits = chunks_search(kb_ids=[mine.pk], query="anything at all", limit=50)

    assert len(hits) == 50
    assert {h["knowledge_base_id"] for h in hits} == {mine.public_id}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
