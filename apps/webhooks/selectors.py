"""Reads for webhook deliveries and inbound hooks."""
from __future__ import annotations

from datetime import datetime

from apps.common import NotFound
from apps.tracing import trace_id
from apps.webhooks.models import InboundHook, WebhookDelivery


def delivery_log_ids(*, delivery_id: int) -> dict[str, str]:
    """The public ids a delivery's log lines carry: its job's, its own and its job's trace's (empty if it is gone)."""
    row = WebhookDelivery.objects.filter(pk=delivery_id).values_list(
        "job__public_id", "public_id", "job__trace_context").first()
    if not row:
        return {}
    ids = {"job_id": row[0], "delivery_id": row[1]}
    trace = trace_id(row[2])
    return {**ids, "trace_id": trace} if trace else ids


def inbound_hook_get(*, hook_id: str) -> InboundHook:
    """An enabled inbound hook with its owner and agent; a disabled or unknown one does not exist."""
    hook = InboundHook.objects.select_related("owner", "agent").filter(public_id=hook_id, enabled=True).first()
    if hook is None:
        raise NotFound("hook")
    return hook


def oldest_undelivered_webhook() -> datetime | None:
    """For /metrics: when the oldest delivery still to be delivered (pending or mid-attempt) was written."""
    return (WebhookDelivery.objects.filter(status__in=[WebhookDelivery.Status.PENDING,
                                                        WebhookDelivery.Status.DELIVERING])
            .order_by("created_at").values_list("created_at", flat=True).first())
