"""Outbound webhooks (Standard Webhooks), delivered from a schedule in PostgreSQL.

`webhook_outbox_for_job` writes the delivery row inside the transaction that
ends the job (an outbox: it cannot be lost between commit and scheduling).
Each attempt claims its row with a conditional UPDATE, signs with the
owner's current secret, POSTs without following redirects, and records a
WebhookAttempt; failures are rescheduled by `next_attempt_at`, which beat's
dispatcher reads, so retries survive restarts and a Redis that lost
everything. The same webhook-id is sent on every attempt.
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from apps import metrics
from apps.common import DomainError, insert_new
from apps.jobs.presenters import job_to_dict
from apps.tracing import in_trace, job_span
from apps.webhooks.client import webhook_http_client
from apps.webhooks.dispatch import webhook_dispatch
from apps.webhooks.models import WebhookDelivery, WebhookSecret, new_secret
from apps.webhooks.ssrf import BlockedAddress, resolve_checked

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER = 86400
USER_AGENT = "Opie-Webhooks/1"


def retry_schedule() -> list[float]:
    """Seconds before attempt 1, 2, ...: Standard Webhooks' example schedule by default."""
    return list(settings.AGENTOS_WEBHOOK_RETRY_SCHEDULE)


def request_timeout() -> float:
    return float(settings.AGENTOS_WEBHOOK_TIMEOUT)


def callback_url_validate(*, url: str) -> None:
    try:  # urlsplit and .port raise ValueError on a broken IPv6 host or a port out of range
        parts = urlsplit(url) if isinstance(url, str) else None
        _ = parts and parts.port
    except ValueError:
        parts = None
    if (parts is None or len(url) > 2000 or parts.scheme not in ("http", "https") or not parts.hostname
            or parts.username or parts.password):
        raise DomainError("invalid_callback_url",
                          "callback_url must be an http(s) URL with a host and no credentials, at most 2000 chars.")


def _event(job: Any) -> dict[str, Any]:
    return {"type": job.event_type, "timestamp": timezone.now().isoformat(), "data": job_to_dict(job)}


def webhook_outbox_for_job(*, job: Any) -> None:
    """Inside the transaction that ended `job`: its delivery row, sent after commit."""
    if not job.callback_url:
        return
    delivery = insert_new(WebhookDelivery(job=job, owner_id=job.owner_id, event_type=job.event_type,
                                          url=job.callback_url, payload=_event(job), next_attempt_at=timezone.now()))
    transaction.on_commit(lambda: webhook_dispatch(delivery_id=delivery.pk, deliver=webhook_deliver))


def webhook_secret_get_or_create(*, user: AbstractBaseUser) -> str:
    secret, _ = WebhookSecret.objects.get_or_create(user=user)
    return secret.secret


def webhook_secret_rotate(*, user: AbstractBaseUser) -> str:
    secret, created = WebhookSecret.objects.get_or_create(user=user)
    if not created:
        secret.secret, secret.rotated_at = new_secret(), timezone.now()
        secret.save(update_fields=["secret", "rotated_at"])
    return secret.secret


def signed_headers(*, secret: str, webhook_id: str, body: str, at: datetime | None = None) -> dict[str, str]:
    at = at or datetime.now(tz=dt_timezone.utc)
    return {"webhook-id": webhook_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": Webhook(secret).sign(webhook_id, at, body)}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(tz=dt_timezone.utc)).total_seconds()
        except (TypeError, ValueError):
            return None
    return max(0.0, min(seconds, MAX_RETRY_AFTER))


@dataclass(frozen=True)
class _Claimed:
    """What one attempt needs, as the claim returned it."""

    delivery_id: int
    public_id: str
    url: str
    body: str
    webhook_id: str
    number: int
    secret: str
    job_public_id: str = ""
    trace_context: str = ""  # its job's (apps.tracing): the attempt's span is in the job's trace


# The claim, as one statement that also returns the row and its owner's signing
# secret: every attempt starts here, and the ORM's UPDATE, SELECT and secret
# lookup cost more worker CPU than PostgreSQL spends on all three.
_CLAIM_SQL = """
UPDATE webhooks_webhookdelivery AS d
   SET status = 'delivering', claimed_at = %(now)s
  FROM jobs_job AS j
 WHERE d.id = %(id)s AND d.status = 'pending' AND d.next_attempt_at <= %(now)s AND j.id = d.job_id
RETURNING d.public_id, d.owner_id, d.url, d.payload, d.webhook_id, d.attempt_count,
          (SELECT s.secret FROM webhooks_webhooksecret AS s WHERE s.user_id = d.owner_id),
          j.public_id, j.trace_context
"""


def _claim(delivery_id: int) -> _Claimed | None:
    """pending and due -> delivering; None if another attempt has it or it is not due."""
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, {"id": delivery_id, "now": timezone.now()})
        row = cursor.fetchone()
    if row is None:
        return None
    public_id, owner_id, url, payload, webhook_id, attempt_count, secret, job_public_id, trace_context = row
    if secret is None:  # the owner's first webhook: make their secret, as the API would
        secret = WebhookSecret.objects.get_or_create(user_id=owner_id)[0].secret
    # Django's backend hands jsonb over as text; the body is it loaded as JSONField would, compactly re-encoded
    body = json.dumps(json.loads(payload), separators=(",", ":"))
    return _Claimed(delivery_id=delivery_id, public_id=public_id, url=url, body=body, webhook_id=webhook_id,
                    number=attempt_count + 1, secret=secret, job_public_id=job_public_id,
                    trace_context=trace_context)


def _post(claimed: _Claimed) -> tuple[int | None, str, str, float | None, bool]:
    """One HTTP attempt: (status code, error, response excerpt, retry-after, final)."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               **signed_headers(secret=claimed.secret, webhook_id=claimed.webhook_id, body=claimed.body)}
    try:
        target, extra = resolve_checked(claimed.url)
    except BlockedAddress as exc:
        return None, f"ssrf_blocked: {exc}", "", None, True
    try:
        timeout = request_timeout()
        response = webhook_http_client(timeout=timeout).post(
            target, content=claimed.body.encode(), headers={**headers, **extra}, timeout=timeout,
            follow_redirects=False)
    except httpx.HTTPError as exc:
        return None, f"{exc.__class__.__name__}: {exc}"[:1000], "", None, False
    excerpt = response.text[:1000]
    if 200 <= response.status_code < 300:
        return response.status_code, "", excerpt, None, True
    if response.status_code == 410:
        return response.status_code, "410 Gone: the receiver asked us to stop", excerpt, None, True
    return response.status_code, f"HTTP {response.status_code}", excerpt, _retry_after(response), False


# The attempt's row and the delivery's new state, in one statement (so atomic
# without a transaction's two extra round trips).
_RECORD_SQL = """
WITH attempt AS (
    INSERT INTO webhooks_webhookattempt (delivery_id, number, started_at, duration_ms, status_code, error,
                                         response_excerpt, next_retry_at)
    VALUES (%(id)s, %(number)s, %(started)s, %(duration_ms)s, %(status_code)s, %(error)s, %(excerpt)s,
            %(next_at)s)
)
UPDATE webhooks_webhookdelivery
   SET attempt_count = %(number)s, last_status_code = %(status_code)s, last_error = %(error)s,
       next_attempt_at = %(next_at)s, status = %(status)s, delivered_at = %(delivered_at)s
 WHERE id = %(id)s
"""

_STATUS_AFTER = {"delivered": WebhookDelivery.Status.DELIVERED, "retrying": WebhookDelivery.Status.PENDING,
                 "failed": WebhookDelivery.Status.FAILED}


def webhook_deliver(*, delivery_id: int) -> str:
    """One attempt. Returns delivered | retrying | failed | skipped."""
    claimed = _claim(delivery_id)
    if claimed is None:
        return "skipped"
    started, clock = timezone.now(), time.perf_counter()
    with in_trace(claimed.trace_context), job_span("webhook.attempt", **{
            "opie.job.id": claimed.job_public_id, "opie.webhook.delivery_id": claimed.public_id,
            "opie.webhook.attempt": claimed.number}) as span:  # httpx's span of the POST is its child
        status_code, error, excerpt, retry_after, final = _post(claimed)
        if status_code is not None:
            span.set_attribute("http.response.status_code", status_code)
    duration_ms = round((time.perf_counter() - clock) * 1000, 3)
    number = claimed.number
    schedule = retry_schedule()
    delivered = not error
    next_at = None
    if not delivered and not final and number < len(schedule):
        delay = schedule[number] * random.uniform(0.9, 1.1)
        next_at = timezone.now() + timedelta(seconds=max(delay, retry_after or 0))
    outcome = ("delivered" if delivered else "retrying" if next_at else "failed")
    with connection.cursor() as cursor:
        cursor.execute(_RECORD_SQL, {
            "id": delivery_id, "number": number, "started": started, "duration_ms": duration_ms,
            "status_code": status_code, "error": error, "excerpt": excerpt, "next_at": next_at,
            "status": str(_STATUS_AFTER[outcome]), "delivered_at": timezone.now() if delivered else None})
    metrics.webhook_attempt(outcome=outcome)
    logger.info("delivery %s attempt %d: %s %s", claimed.public_id, number, outcome, error or status_code)
    return outcome


def webhooks_due(*, now: datetime | None = None) -> list[int]:
    """Deliveries to send now; ones stuck mid-attempt (worker died) go back to pending first."""
    now = now or timezone.now()
    stuck_before = now - timedelta(seconds=2 * request_timeout() + 5)
    WebhookDelivery.objects.filter(status=WebhookDelivery.Status.DELIVERING, claimed_at__lt=stuck_before).update(
        status=WebhookDelivery.Status.PENDING, next_attempt_at=now)
    return list(WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now)
                .order_by("next_attempt_at").values_list("pk", flat=True)[:500])


def webhook_redeliver(*, job: Any) -> WebhookDelivery:
    """Send the job's event again, with the original webhook-id so receivers can dedupe."""
    if not job.is_terminal:
        raise DomainError("job_not_finished", "The job has not ended; there is nothing to deliver yet.", status=409)
    if not job.callback_url:
        raise DomainError("no_callback_url", "The job has no callback_url.", status=409)
    # its terminal event's first delivery (a paused run also had `job.action_required` ones)
    original = WebhookDelivery.objects.filter(job=job, event_type=job.event_type).order_by("id").first()
    with transaction.atomic():
        delivery = WebhookDelivery.objects.create(
            job=job, owner_id=job.owner_id, event_type=job.event_type, url=job.callback_url,
            payload=original.payload if original else _event(job), next_attempt_at=timezone.now(),
            **({"webhook_id": original.webhook_id} if original else {}))
        transaction.on_commit(lambda: webhook_dispatch(delivery_id=delivery.pk, deliver=webhook_deliver))
    return delivery
