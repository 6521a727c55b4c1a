from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.common import public_id


def _agent_id() -> str:
    return public_id("agent")


class Agent(models.Model):
    """An AI agent as the product defines it; workers build agno agents from it."""

    class Visibility(models.TextChoices):
        PRIVATE = "private"
        SHARED = "shared"  # the owner plus `shared_with`
        PUBLIC = "public"  # every user

    public_id = models.CharField(max_length=40, unique=True, default=_agent_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    instructions = models.TextField(blank=True, default="")
    model_provider = models.CharField(max_length=32, default="local")
    model_id = models.CharField(max_length=200, default="echo")
    model_options = models.JSONField(default=dict, blank=True)
    tools = models.JSONField(default=list, blank=True)
    # {"<tool>": "auto" | "approve" | "input"}; a tool not named is `auto` (apps.agents.tools)
    tool_policies = models.JSONField(default=dict, blank=True)
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.PRIVATE)
    shared_with = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="shared_agents")
    # Bumped on every change: warm pools key agents by (id, version).
    version = models.PositiveIntegerField(default=1)
    enabled = models.BooleanField(default=True)
    is_vault = models.BooleanField(default=False)
    # what the last agent sync found (apps.agents.sync)
    sync_status = models.CharField(max_length=16, blank=True, default="",
                                   choices=[("ok", "ok"), ("invalid", "invalid"), ("stale", "stale")])
    sync_error = models.TextField(blank=True, default="")
    synced_at = models.DateTimeField(null=True, blank=True)
    config_hash = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["visibility", "enabled"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.public_id})"
