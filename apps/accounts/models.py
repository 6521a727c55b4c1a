from __future__ import annotations

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    """A bearer token. Only its SHA-256 digest is stored; the raw value is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=16, help_text="First characters, to recognise a token.")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"


class UserQuota(models.Model):
    """One user's own limits, where they differ from the deployment's
    (AGENTOS_USER_MAX_RUNNING, AGENTOS_USER_MAX_QUEUED); set by staff in the admin."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota")
    max_running = models.PositiveIntegerField(
        null=True, blank=True, help_text="Jobs of this user that may run at once, across all workers (0: no limit).")
    max_queued = models.PositiveIntegerField(
        null=True, blank=True, help_text="Jobs of this user that may wait at once; past it, 429 queue_full.")

    def __str__(self) -> str:
        return f"quota of {self.user}"
