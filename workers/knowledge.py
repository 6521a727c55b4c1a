"""Run an ingest job: ingest its document with progress events (the claim and the
ending are workers.harness's)."""
from __future__ import annotations

import logging
from typing import Any

from apps.events.services import job_event_append
from apps.jobs.models import Job
from apps.knowledge.ingest import UnreadableDocument, document_failed, document_ingest
from apps.knowledge.models import Document
from workers.harness import JobFailed, job_run

logger = logging.getLogger(__name__)


def execute_ingest_job(job_id: int) -> str:
    """Returns what happened, for logs: skipped | succeeded | failed | dropped."""
    return job_run(job_id, kind=Job.Kind.INGEST, body=_ingest, logger=logger, log_ids=_document_ids)


def _document_ids(job: Job) -> dict[str, Any]:
    """Its lines also name the document and knowledge base, as a message job's name its agent and session."""
    return {"document_id": (job.input or {}).get("document_id"),
            "knowledge_base_id": (job.input or {}).get("knowledge_base_id")}


def _ingest(job: Job) -> dict[str, Any]:
    document = Document.objects.defer("data").filter(public_id=(job.input or {}).get("document_id")).first()
    if document is None:
        raise JobFailed("document_deleted", "The document was deleted before it was ingested.")

    def progress(done: int, total: int) -> None:
        job_event_append(job=job, type="ingest.progress", data={"chunks_embedded": done, "chunks_total": total})

    try:
        count = document_ingest(document=document, progress=progress)
    except UnreadableDocument as exc:
        document_failed(document=document, error=str(exc))
        raise JobFailed("unreadable_document", str(exc)) from exc
    except Exception as exc:
        document_failed(document=document, error=f"ingestion failed: {exc.__class__.__name__}")
        raise
    return {"document_id": document.public_id, "chunk_count": count, "status": "ready"}
