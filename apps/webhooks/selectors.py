"""Reads for webhook deliveries."""
from __future__ import annotations

from apps.webhooks.models import WebhookDelivery


def delivery_log_ids(*, delivery_id: int) -> dict[str, str]:
    """The public ids a delivery's log lines carry: its job's and its own (empty if it is gone)."""
    row = WebhookDelivery.objects.filter(pk=delivery_id).values_list("job__public_id", "public_id").first()
    return {"job_id": row[0], "delivery_id": row[1]} if row else {}
