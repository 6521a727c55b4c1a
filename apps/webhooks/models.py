from __future__ import annotations

import base64
import secrets

from django.conf import settings
from django.db import models

from apps.common import public_id


def new_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _delivery_id() -> str:
    return public_id("whd")


def _hook_id() -> str:
    return public_id("hook")


def _webhook_id() -> str:
    return f"msg_{secrets.token_hex(12)}"


class WebhookSecret(models.Model):
    """Each user's signing secret for outbound webhooks."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_secret")
    secret = models.CharField(max_length=100, default=new_secret)
    created_at = models.DateTimeField(auto_now_add=True)
    rotated_at = models.DateTimeField(null=True, blank=True)


class WebhookDelivery(models.Model):
    """One event for one callback URL; its schedule lives here, not in a worker."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERING = "delivering"
        DELIVERED = "delivered"
        FAILED = "failed"

    public_id = models.CharField(max_length=40, unique=True, default=_delivery_id, editable=False)
    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="deliveries")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    event_type = models.CharField(max_length=40)
    # the same on every attempt: the receiver's idempotency key
    webhook_id = models.CharField(max_length=64, default=_webhook_id)
    url = models.URLField(max_length=2000)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]


class WebhookAttempt(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.FloatField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    response_excerpt = models.CharField(max_length=1000, blank=True, default="")
    next_retry_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="one_attempt_number")]


class InboundHook(models.Model):
    """An address an external system POSTs signed messages to, for one agent."""

    public_id = models.CharField(max_length=40, unique=True, default=_hook_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="inbound_hooks")
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="inbound_hooks")
    secret = models.CharField(max_length=100, default=new_secret)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)


class InboundDelivery(models.Model):
    """webhook-ids already accepted by a hook: a replay is refused."""

    hook = models.ForeignKey(InboundHook, on_delete=models.CASCADE, related_name="received")
    webhook_id = models.CharField(max_length=200)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["hook", "webhook_id"], name="one_inbound_per_id")]
