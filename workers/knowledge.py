"""Run an ingest job: claim it, ingest its document with progress events, finish."""
from __future__ import annotations

import logging

from apps.events.services import job_event_append
from apps.jobs.lifecycle import job_claim, job_fail, job_succeed
from apps.jobs.models import Job
from apps.knowledge.ingest import UnreadableDocument, document_failed, document_ingest
from apps.knowledge.models import Document
from config.logging import log_context
from workers.execution import worker_name

logger = logging.getLogger(__name__)


def execute_ingest_job(job_id: int) -> str:
    """Returns what happened, for logs: skipped | succeeded | failed."""
    job = job_claim(job_id=job_id, worker=worker_name())
    if job is None:
        logger.info("ingest job %s skipped: not claimable now", job_id)
        return "skipped"
    # every line logged from here to the end of the job carries its ids, as message jobs do
    with log_context(job_id=job.public_id, document_id=(job.input or {}).get("document_id"),
                     knowledge_base_id=(job.input or {}).get("knowledge_base_id")):
        logger.info("ingest job started (attempt %d)", job.attempts)
        outcome = _run_claimed(job)
        logger.info("ingest job %s", outcome)
        return outcome


def _run_claimed(job: Job) -> str:
    document = Document.objects.defer("data").filter(public_id=(job.input or {}).get("document_id")).first()
    if document is None:
        job_fail(job=job, code="document_deleted", message="The document was deleted before it was ingested.")
        return "failed"

    def progress(done: int, total: int) -> None:
        job_event_append(job=job, type="ingest.progress", data={"chunks_embedded": done, "chunks_total": total})

    try:
        count = document_ingest(document=document, progress=progress)
    except UnreadableDocument as exc:
        document_failed(document=document, error=str(exc))
        job_fail(job=job, code="unreadable_document", message=str(exc))
        return "failed"
    except Exception as exc:
        document_failed(document=document, error=f"ingestion failed: {exc.__class__.__name__}")
        raise
    job_succeed(job=job, result={"document_id": document.public_id, "chunk_count": count, "status": "ready"})
    return "succeeded"
