"""Webhook delivery tasks (queue `webhooks`). The schedule lives in PostgreSQL."""
from __future__ import annotations

from celery_app import app


@app.task(acks_late=True, ignore_result=True)
def deliver_webhook_task(delivery_id: int) -> str:
    """One delivery attempt; a duplicate message finds the row claimed and does nothing."""
    from apps.webhooks.services import webhook_deliver

    return webhook_deliver(delivery_id=delivery_id)


@app.task(ignore_result=True)
def dispatch_due_webhooks_task() -> int:
    """Send every delivery whose next attempt is due (beat, every few seconds)."""
    from apps.webhooks.services import webhooks_due

    due = webhooks_due()
    for delivery_id in due:
        deliver_webhook_task.delay(delivery_id)
    return len(due)
