from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.common import public_id


def _session_id() -> str:
    return public_id("sess")


def _message_id() -> str:
    return public_id("msg")


class ChatSession(models.Model):
    public_id = models.CharField(max_length=40, unique=True, default=_session_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_sessions")
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="sessions")
    title = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at", "-id"])]

    def __str__(self) -> str:
        return self.title or self.public_id


class ChatMessage(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    public_id = models.CharField(max_length=40, unique=True, default=_message_id, editable=False)
    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField()
    tool_calls = models.JSONField(default=list, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    # knowledge chunks the reply was grounded on: document, chunk, score, excerpt
    sources = models.JSONField(default=list, blank=True)
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL,
                            related_name="messages")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # insertion order is conversation order: ids come from one sequence
        ordering = ["id"]
        constraints = [
            # a job that runs twice still writes one reply
            models.UniqueConstraint(fields=["job"], condition=Q(role="assistant"), name="one_reply_per_job"),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"
