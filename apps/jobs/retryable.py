"""Which failed jobs are worth running again: the one list the API, the retry service and the admin read.

A failure is retryable when running the same input again may succeed without
anybody changing anything: the infrastructure or a provider was in the way.
It is not when the same input fails the same way every time (bad input, a
refusal, something that is gone), or when we do not know the code: an unknown
failure is not guessed to be transient.
"""
from __future__ import annotations

from apps.jobs.models import Job

RETRYABLE_CODES = frozenset({
    # the model provider failed (an upstream 5xx, a timeout after the client's own retries,
    # a malformed or empty answer): providers recover, the same question may well succeed
    "model_error",
    # every attempt's worker was lost (killed, OOM, redeployed) before it could finish
    # (apps.jobs.lifecycle's endings): the input never had its fair run
    "attempts_exhausted",
    # an agent sync found another sync holding the global lock and did nothing: later, it runs
    "sync_in_progress",
})
# Not retryable, and why (the codes a failed job carries today):
# - agent_unavailable: the message's agent was deleted or disabled; a retry would fail the same
#   way (re-enable it and send the message again, which is a new decision, not a retry);
# - agent_not_found: a sync of an agent that no longer exists;
# - document_deleted: an ingest whose document is gone;
# - unreadable_document: the file itself cannot be parsed: the same bytes fail the same way.


def job_retryable(job: Job) -> bool:
    """A failed job whose error is one a retry may fix; False for every job that did not fail."""
    return job.status == Job.Status.FAILED and job.error_code in RETRYABLE_CODES
