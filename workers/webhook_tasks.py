"""Webhook delivery tasks (queue `webhooks`). The schedule lives in PostgreSQL."""
from __future__ import annotations

from apps import task_routes
from apps.webhooks.selectors import delivery_log_ids
from apps.webhooks.services import webhook_deliver, webhooks_due
from celery_app import app
from config.logging import log_context


@app.task(name=task_routes.DELIVER_WEBHOOK.name, acks_late=True, ignore_result=True)
def deliver_webhook_task(delivery_id: int) -> str:
    """One delivery attempt; a duplicate message finds the row claimed and does nothing."""
    with log_context(**delivery_log_ids(delivery_id=delivery_id)):  # the attempt's lines name its job
        return webhook_deliver(delivery_id=delivery_id)


@app.task(name=task_routes.DISPATCH_DUE_WEBHOOKS.name, ignore_result=True)
def dispatch_due_webhooks_task() -> int:
    """Send every delivery whose next attempt is due (beat, every few seconds)."""
    due = webhooks_due()
    for delivery_id in due:
        deliver_webhook_task.delay(delivery_id)
    return len(due)
