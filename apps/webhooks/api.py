"""Webhook endpoints: the signing secret, delivery ledgers, and inbound hooks."""
from __future__ import annotations

from typing import Any, Optional

from django.http import HttpRequest
from django.urls import reverse
from ninja import Field, Router, Schema

from apps.agents.selectors import agent_get_visible
from apps.api.idempotency import idempotent
from apps.api.schemas import ErrorOut, JobAccepted, ObjectIn
from apps.common import DomainError
from apps.jobs.presenters import job_accepted_to_dict
from apps.jobs.selectors import job_get_owned
from apps.webhooks.inbound import inbound_hook_create, inbound_message_receive, inbound_signature_verify
from apps.webhooks.models import InboundHook, WebhookDelivery
from apps.webhooks.selectors import inbound_hook_get
from apps.webhooks.services import webhook_redeliver, webhook_secret_get_or_create, webhook_secret_rotate

router = Router(tags=["webhooks"])
ERRORS: dict[int, Any] = {code: ErrorOut for code in (400, 401, 403, 404, 409, 413, 429, 503)}


class SecretOut(Schema):
    secret: str


class HookIn(ObjectIn):
    agent_id: str = Field(..., min_length=1, max_length=40)


class InboundIn(ObjectIn):
    message: str
    session_id: Optional[str] = Field(None, max_length=40)
    callback_url: Optional[str] = Field(None, max_length=2000)


class AttemptOut(Schema):
    number: int
    started_at: Optional[str]
    duration_ms: float
    status_code: Optional[int]
    error: str
    next_retry_at: Optional[str]


class DeliveryOut(Schema):
    id: str
    event_type: str
    webhook_id: str
    url: str
    status: str
    attempt_count: int
    next_attempt_at: Optional[str]
    last_status_code: Optional[int]
    last_error: str
    created_at: Optional[str]
    delivered_at: Optional[str]
    attempts: list[AttemptOut]


class DeliveryList(Schema):
    deliveries: list[DeliveryOut]


class HookCreated(Schema):
    hook_id: str
    agent_id: str
    url: str
    secret: str


class HookOut(Schema):
    hook_id: str
    agent_id: str
    enabled: bool
    created_at: Optional[str]


class HookList(Schema):
    hooks: list[HookOut]


def _iso(value: Any) -> Optional[str]:
    return value.isoformat() if value else None


def delivery_to_dict(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.public_id, "event_type": delivery.event_type, "webhook_id": delivery.webhook_id,
        "url": delivery.url, "status": delivery.status, "attempt_count": delivery.attempt_count,
        "next_attempt_at": _iso(delivery.next_attempt_at), "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error, "created_at": _iso(delivery.created_at),
        "delivered_at": _iso(delivery.delivered_at),
        "attempts": [{"number": a.number, "started_at": _iso(a.started_at), "duration_ms": a.duration_ms,
                      "status_code": a.status_code, "error": a.error, "next_retry_at": _iso(a.next_retry_at)}
                     for a in delivery.attempts.all()],
    }


@router.get("webhook-secret/", response={200: SecretOut, **ERRORS})
def secret_get(request: HttpRequest) -> Any:
    """Your signing secret: verify our webhooks with any Standard Webhooks library."""
    return {"secret": webhook_secret_get_or_create(user=request.auth)}  # type: ignore[attr-defined]


@router.post("webhook-secret/rotate/", response={200: SecretOut, **ERRORS})
def secret_rotate(request: HttpRequest) -> Any:
    return {"secret": webhook_secret_rotate(user=request.auth)}  # type: ignore[attr-defined]


@router.get("jobs/{job_id}/deliveries/", response={200: DeliveryList, **ERRORS})
def deliveries_list(request: HttpRequest, job_id: str) -> Any:
    """Every webhook delivery of a job, each with all its attempts."""
    job = job_get_owned(user=request.auth, job_id=job_id)  # type: ignore[attr-defined]
    deliveries = WebhookDelivery.objects.filter(job=job).prefetch_related("attempts").order_by("id")
    return {"deliveries": [delivery_to_dict(d) for d in deliveries]}


@router.post("jobs/{job_id}/deliveries/redeliver/", response={202: DeliveryOut, **ERRORS})
def deliveries_redeliver(request: HttpRequest, job_id: str) -> Any:
    job = job_get_owned(user=request.auth, job_id=job_id)  # type: ignore[attr-defined]
    return idempotent(request, lambda: (202, delivery_to_dict(webhook_redeliver(job=job))))


@router.post("hooks/", response={201: HookCreated, **ERRORS})
def hooks_create(request: HttpRequest, payload: HookIn) -> Any:
    """An inbound address for an agent; the secret is shown once, here (and to a retry
    with the same Idempotency-Key, which gets the same hook)."""
    agent = agent_get_visible(user=request.auth, agent_id=payload.agent_id)  # type: ignore[attr-defined]

    def create() -> tuple[int, dict[str, Any]]:
        hook = inbound_hook_create(user=request.auth, agent=agent)  # type: ignore[attr-defined]
        return 201, {"hook_id": hook.public_id, "agent_id": agent.public_id,
                     "url": request.build_absolute_uri(reverse("agentos:hooks_receive",
                                                               kwargs={"hook_id": hook.public_id})),
                     "secret": hook.secret}

    return idempotent(request, create)


@router.get("hooks/", response={200: HookList, **ERRORS})
def hooks_list(request: HttpRequest) -> Any:
    hooks = InboundHook.objects.filter(owner=request.auth).select_related("agent")  # type: ignore[attr-defined]
    return {"hooks": [{"hook_id": h.public_id, "agent_id": h.agent.public_id, "enabled": h.enabled,
                       "created_at": _iso(h.created_at)} for h in hooks]}


@router.post("hooks/{hook_id}/", auth=None, response={202: JobAccepted, **ERRORS})
def hooks_receive(request: HttpRequest, hook_id: str) -> Any:
    """An external system sends a message to the hook's agent, signed with the
    hook's secret (Standard Webhooks); no token, no CSRF. Stale timestamps
    (over 5 min) and replayed webhook-ids are refused. An Idempotency-Key is the
    hook owner's, as if they had sent the message."""
    hook = inbound_hook_get(hook_id=hook_id)
    inbound_signature_verify(hook=hook, body=request.body, headers=request.headers)
    try:
        payload = InboundIn.model_validate_json(request.body)
    except ValueError as exc:
        raise DomainError("invalid_input", f"Body must be JSON with a message: {exc}".splitlines()[0]) from None
    return idempotent(request, lambda: (202, job_accepted_to_dict(inbound_message_receive(
        hook=hook, webhook_id=request.headers["webhook-id"], message=payload.message,
        session_id=payload.session_id, callback_url=payload.callback_url or ""))), user=hook.owner)
