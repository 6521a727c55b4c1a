"""The REST API at /api/v1/agentos/: thin views over AgentOSService.

The hot endpoints (send-message, which may wait, and a job's status, which
clients poll) are async: their database work runs in one step on the web
process's threads, and a `wait` holds no thread (config/asgi.py)."""
from __future__ import annotations

from typing import Any, Optional

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from ninja import NinjaAPI, Query, Router

from apps.api.auth import BearerToken
from apps.api.errors import install_error_handlers
from apps.api.idempotency import idempotent
from apps.api.ratelimit import check_job_rate
from apps.api.schemas import (
    ActionsIn,
    AgentIn,
    AgentList,
    AgentOut,
    AgentPatch,
    ErrorOut,
    InfoOut,
    JobAccepted,
    JobKind,
    JobList,
    JobOut,
    JobStatus,
    SendMessageIn,
    SessionCreateIn,
    SessionDetail,
    SessionList,
    SessionOut,
    SyncIn,
)
from apps.common import DomainError, agentos_enabled_check
from apps.events.api import router as events_router
from apps.events.waiting import job_wait
from apps.jobs.models import Job
from apps.knowledge.api import router as knowledge_router
from apps.opie.agentos.service import AgentOSService
from apps.schedules.api import router as schedules_router
from apps.usage.api import router as usage_router
from apps.webhooks.api import router as webhooks_router

api = NinjaAPI(
    title="Opie AgentOS API", version="1", urls_namespace="agentos", auth=BearerToken(),
    openapi_url="openapi.json", docs_url="docs",
    description="Agents, chat sessions and background jobs. Every error is "
                '`{"error": {"code": ..., "message": ...}}`.')
install_error_handlers(api)
router = Router()
ERRORS: dict[int, Any] = {code: ErrorOut for code in (400, 401, 403, 404, 409, 413, 429, 503)}


def service(request: HttpRequest) -> AgentOSService:
    agentos_enabled_check()
    return AgentOSService(request.auth)  # type: ignore[attr-defined]


@router.get("", response={200: InfoOut, **ERRORS}, summary="AgentOS info")
def root(request: HttpRequest) -> Any:
    return info(request)


@router.get("info/", response={200: InfoOut, **ERRORS}, summary="AgentOS info")
def info(request: HttpRequest) -> Any:
    return AgentOSService(request.auth).info()  # type: ignore[attr-defined]


@router.get("agents/", response={200: AgentList, **ERRORS})
def agents_list(request: HttpRequest) -> Any:
    return {"agents": service(request).get_available_agents()}


@router.post("agents/", response={201: AgentOut, **ERRORS})
def agents_create(request: HttpRequest, payload: AgentIn) -> Any:
    fields = payload.dict()
    model = fields.pop("model")
    return idempotent(request, lambda: (201, service(request).create_agent(
        model_provider=model["provider"], model_id=model["id"], model_options=model["options"], **fields)))


@router.get("agents/{agent_id}/", response={200: AgentOut, **ERRORS})
def agents_get(request: HttpRequest, agent_id: str) -> Any:
    return service(request).get_agent(agent_id)


@router.patch("agents/{agent_id}/", response={200: AgentOut, **ERRORS})
def agents_update(request: HttpRequest, agent_id: str, payload: AgentPatch) -> Any:
    changes = payload.dict(exclude_unset=True)
    if any(value is None for key, value in changes.items() if key != "shared_with"):
        raise DomainError("invalid_input", "fields may be omitted but not null.")
    if changes.pop("model", None) is not None:
        # the whole spec, defaults included: exclude_unset would drop a left-out provider or id
        model = payload.model
        changes.update(model_provider=model.provider, model_id=model.id, model_options=model.options)
    return service(request).update_agent(agent_id, **changes)


@router.delete("agents/{agent_id}/", response={204: None, **ERRORS})
def agents_delete(request: HttpRequest, agent_id: str) -> Any:
    service(request).delete_agent(agent_id)
    return 204, None


@router.post("create-session/", response={201: SessionOut, **ERRORS})
def sessions_create(request: HttpRequest, payload: SessionCreateIn) -> Any:
    return idempotent(request, lambda: (201, service(request).create_session(payload.agent_id,
                                                                             title=payload.title)))


@router.get("sessions/", response={200: SessionList, **ERRORS})
def sessions_list(request: HttpRequest, agent_id: Optional[str] = None, cursor: Optional[str] = None,
                  limit: int = Query(20, ge=1, le=100)) -> Any:
    return service(request).list_sessions(agent_id=agent_id, cursor=cursor, limit=limit)


@router.get("sessions/{session_id}/", response={200: SessionDetail, **ERRORS})
def sessions_get(request: HttpRequest, session_id: str) -> Any:
    return service(request).get_session(session_id)


def _accept_message(request: HttpRequest, payload: SendMessageIn) -> Any:
    svc = service(request)
    check_job_rate(request)
    return idempotent(request, lambda: (202, svc.send_message(
        payload.agent_id, payload.message, session_id=payload.session_id, callback_url=payload.callback_url or "",
        multitask=payload.multitask, timeout=payload.timeout, priority=payload.priority)))


@router.post("send-message/", response={200: JobOut, 202: JobAccepted, **ERRORS})
async def send_message(request: HttpRequest, payload: SendMessageIn) -> Any:
    """Accept a message (202). With `wait`, answer 200 with the finished job if it ends in time."""
    accepted = await sync_to_async(_accept_message)(request, payload)
    if not payload.wait or not isinstance(accepted, tuple):
        return accepted
    job_id = accepted[1]["job_id"]
    await job_wait(public_id=job_id, timeout=payload.wait)
    finished = await sync_to_async(service(request).get_job)(job_id)
    return (200, finished) if finished["status"] in Job.TERMINAL else accepted


@router.post("sync/", response={202: JobOut, **ERRORS})
def sync(request: HttpRequest, payload: SyncIn) -> Any:
    """Staff: queue an agent sync on the `sync` queue; it is a job like any other."""
    svc = service(request)
    if not request.auth.is_staff:  # type: ignore[attr-defined]
        raise DomainError("staff_only", "Only staff may run an agent sync.", status=403)
    check_job_rate(request)
    return idempotent(request, lambda: (202, svc.start_sync(
        agent_id=payload.agent_id, user_id=payload.user_id, dry_run=payload.dry_run,
        callback_url=payload.callback_url or "")))


@router.get("jobs/", response={200: JobList, **ERRORS})
def jobs_list(request: HttpRequest, status: Optional[JobStatus] = None, kind: Optional[JobKind] = None,
              agent_id: Optional[str] = None, session_id: Optional[str] = None, cursor: Optional[str] = None,
              limit: int = Query(20, ge=1, le=100)) -> Any:
    return service(request).list_jobs(status=status, kind=kind, agent_id=agent_id, session_id=session_id,
                                      cursor=cursor, limit=limit)


@router.get("jobs/{job_id}/", response={200: JobOut, **ERRORS})
async def jobs_get(request: HttpRequest, job_id: str) -> Any:
    return await sync_to_async(lambda: service(request).get_job(job_id))()


@router.post("jobs/{job_id}/cancel/", response={202: JobOut, **ERRORS})
def jobs_cancel(request: HttpRequest, job_id: str) -> Any:
    """Queued: cancelled at once. Running: stops at its next safe point, no reply. Finished: 409."""
    return 202, service(request).request_job_cancel(job_id)


@router.post("jobs/{job_id}/retry/", response={202: JobOut, **ERRORS}, summary="Retry a failed job")
def jobs_retry(request: HttpRequest, job_id: str) -> Any:
    """A failed job whose error is retryable runs again as a new job (202, with `retry_of`
    naming this one): same input, at the end of its session's order, its own webhook.
    409 `job_not_failed`, `job_not_retryable`, `job_already_retried` or `agent_unavailable`
    otherwise. Honours `Idempotency-Key`: the same key answers with the same new job."""
    svc = service(request)
    check_job_rate(request)
    return idempotent(request, lambda: (202, svc.retry_job(job_id)))


@router.post("jobs/{job_id}/actions/", response={202: JobOut, **ERRORS}, summary="Decide a paused job's actions")
def jobs_actions(request: HttpRequest, job_id: str, payload: ActionsIn) -> Any:
    """Approve or reject a paused run's tool calls, or supply their input. Once no action
    is left pending the job is queued again (202) and continues on any worker; an action
    decided before is 409 `action_already_decided`. Honours `Idempotency-Key`."""
    svc = service(request)
    return idempotent(request, lambda: (202, svc.decide_actions(job_id, payload.decisions)))


api.add_router("", router)
api.add_router("", events_router)
api.add_router("", webhooks_router)
api.add_router("", knowledge_router)
api.add_router("", usage_router)
api.add_router("", schedules_router)
