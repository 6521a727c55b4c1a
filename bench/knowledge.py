"""Scenario 6 of `python -m bench`: knowledge bases on pgvector.

* Ingestion: documents of a few paragraphs through the worker's own ingest
  path (parse, chunk, embed with all-MiniLM-L6-v2, insert), docs/s and chunks/s.
* Search at 10k and 100k chunks: p50/p99 of a top-10 query through the HNSW
  index, and recall@10 against an exact scan of the same rows. Embedding
  100k real chunks would take minutes on two cores, so these rows hold
  synthetic embeddings: unit vectors scattered around 1,000 random topic
  centres (clustered like real embeddings, unlike uniform noise), loaded with
  COPY and indexed afterwards, as a bulk load is done. Queries are fresh
  points near those centres.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

TOPICS = ["harbour logistics", "alpine botany", "medieval coinage", "solar inverters", "sourdough baking",
          "tax law for freelancers", "marathon training", "orbital mechanics", "jazz harmony", "beekeeping"]


def _document(i: int) -> str:
    topic = TOPICS[i % len(TOPICS)]
    return "\n\n".join(f"Note {i}.{p} on {topic}: " + " ".join(
        f"{topic.split()[0]} detail {i}-{p}-{w} matters for practitioners." for w in range(12)) for p in range(3))


def ingestion(user: Any, count: int) -> dict[str, Any]:
    from apps.knowledge.embeddings import get_embedder
    from apps.knowledge.ingest import document_ingest
    from apps.knowledge.models import Document
    from apps.knowledge.services import kb_create

    get_embedder()  # a worker loads the model once at its first job; not part of the rate
    kb = kb_create(user=user, name="bench ingestion")
    documents = [Document.objects.create(knowledge_base=kb, owner=user, name=f"note-{i}.md", size=0,
                                         checksum=f"bench-{i}-{time.time_ns()}", data=_document(i).encode())
                 for i in range(count)]
    started = time.perf_counter()
    chunks = sum(document_ingest(document=d) for d in documents)
    seconds = time.perf_counter() - started
    return {"documents": count, "chunks": chunks, "seconds": seconds, "docs_per_s": count / seconds,
            "chunks_per_s": chunks / seconds}


def _fill(user: Any, total: int, centres: Any, rng: Any, say: Callable[[str], None]) -> tuple[Any, float]:
    """COPY the rows in, then build the HNSW index over all of them (how a bulk
    load is done); returns the knowledge base and the index build time."""
    import numpy as np
    from django.db import connection

    from apps.knowledge.models import Document
    from apps.knowledge.services import kb_create

    kb = kb_create(user=user, name=f"bench {total}")
    document = Document.objects.create(knowledge_base=kb, owner=user, name="synthetic", checksum="synthetic",
                                       data=b"", status="ready")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX IF EXISTS chunk_embedding_hnsw")
        raw = cursor.connection
        with raw.cursor().copy("COPY knowledge_chunk (document_id, knowledge_base_id, index, content, embedding) "
                               "FROM STDIN") as copy:
            for start in range(0, total, 5000):
                count = min(5000, total - start)
                picks = centres[rng.integers(0, len(centres), count)]
                vectors = picks + rng.normal(0, 0.35 / 384 ** 0.5, (count, 384))
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                for offset, vector in enumerate(vectors):
                    text = "[" + ",".join(f"{x:.5f}" for x in vector) + "]"
                    copy.write_row((document.pk, kb.pk, start + offset, f"chunk {start + offset}", text))
        say(f"   {total} chunks copied in {time.perf_counter() - started:.0f} s; building the HNSW index")
        built = time.perf_counter()
        cursor.execute("SET maintenance_work_mem = '1GB'")
        cursor.execute("CREATE INDEX chunk_embedding_hnsw ON knowledge_chunk USING hnsw (embedding vector_cosine_ops) "
                       "WITH (m = 16, ef_construction = 64)")
        build_s = time.perf_counter() - built
    return kb, build_s


def _top10(kb_id: int, query: list[float], exact: bool) -> tuple[list[int], float]:
    from django.db import connection, transaction

    literal = "[" + ",".join(f"{x:.6f}" for x in query) + "]"
    with transaction.atomic(), connection.cursor() as cursor:
        if exact:
            cursor.execute("SET LOCAL enable_indexscan = off")
        else:
            cursor.execute("SET LOCAL hnsw.ef_search = 100")
        started = time.perf_counter()
        # the bench database holds only this knowledge base's chunks: the whole table is searched
        cursor.execute("SELECT id FROM knowledge_chunk ORDER BY embedding <=> %s::vector LIMIT 10", [literal])
        ids = [row[0] for row in cursor.fetchall()]
        return ids, (time.perf_counter() - started) * 1000


def search_at(user: Any, total: int, queries: int, say: Callable[[str], None]) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(total)
    centres = rng.normal(0, 1, (1000, 384))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    kb, build_s = _fill(user, total, centres, rng, say)
    latencies, recalls, exact_ms = [], [], []
    for _ in range(queries):
        query = list(centres[rng.integers(0, 1000)] + rng.normal(0, 0.35 / 384 ** 0.5, 384))
        approx, ms = _top10(kb.pk, query, exact=False)
        truth, exact = _top10(kb.pk, query, exact=True)
        latencies.append(ms)
        exact_ms.append(exact)
        recalls.append(len(set(approx) & set(truth)) / 10)
    latencies.sort()
    return {"chunks": total, "queries": queries, "index_build_s": build_s, "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "exact_p50_ms": statistics.median(exact_ms), "recall_at_10": statistics.mean(recalls)}


def scenario_knowledge(ctx: dict[str, Any], quick: bool, say: Callable[[str], None]) -> dict[str, Any]:
    from apps.knowledge.models import KnowledgeBase

    KnowledgeBase.objects.filter(owner=ctx["user"]).delete()
    docs = 20 if quick else 100
    say(f"6a. knowledge ingestion: {docs} documents through parse, chunk, embed (all-MiniLM-L6-v2), insert")
    result: dict[str, Any] = {"ingestion": ingestion(ctx["user"], docs), "search": []}
    for total in ((2_000, 10_000) if quick else (10_000, 100_000)):
        KnowledgeBase.objects.filter(owner=ctx["user"]).delete()
        say(f"6b. top-10 search over {total} chunks (HNSW vs exact scan)")
        result["search"].append(search_at(ctx["user"], total, 50 if quick else 200, say))
    KnowledgeBase.objects.filter(owner=ctx["user"]).delete()
    return result


def report_rows(k: dict[str, Any]) -> list[str]:
    i = k["ingestion"]
    rows = [f"| 6. knowledge ingestion ({i['documents']} docs, {i['chunks']} chunks) | docs/s · chunks/s | "
            f"{i['docs_per_s']:.1f} · {i['chunks_per_s']:.1f} |"]
    for s in k["search"]:
        rows.append(f"| | top-10 search, {s['chunks']:,} chunks (HNSW) | p50 {s['p50_ms']:.1f} ms · "
                    f"p99 {s['p99_ms']:.1f} ms · recall@10 {s['recall_at_10']:.3f} (exact scan p50 "
                    f"{s['exact_p50_ms']:.0f} ms; index built in {s.get('index_build_s', 0):.0f} s) |")
    return rows
