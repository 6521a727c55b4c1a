"""Usage figures: one row per user, UTC day, agent, provider and model, kept
current by the reply's own transaction (apps.usage.services.usage_record).

Reports read this rollup, never the messages, so they cost the same at a
million messages as at ten: a user's range is an index range scan of the
unique constraint's index, (user, day, ...), and a few rows per day."""
from __future__ import annotations

from django.conf import settings
from django.db import models


class UsageDaily(models.Model):
    # no index of its own: the unique key's index leads with the user (reports, cascades)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    day = models.DateField()  # the UTC date the run ended
    # the agent's public id as text, not a foreign key: a deleted agent's figures stay the user's
    agent_public_id = models.CharField(max_length=40)
    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=200)
    runs = models.BigIntegerField(default=0)
    model_calls = models.BigIntegerField(default=0)
    tool_calls = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    duration_ms = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "day", "agent_public_id", "provider", "model"],
                                               name="usage_daily_key")]

    def __str__(self) -> str:
        return f"{self.user_id} {self.day} {self.agent_public_id} {self.provider}:{self.model}"
