"""Celery beat's scheduler: django-celery-beat's database scheduler, except that
the defaults in CELERY_BEAT_SCHEDULE are created only when they are missing.

The stock DatabaseScheduler writes every CELERY_BEAT_SCHEDULE entry into the
database with update_or_create on each start, so an interval changed in the
Django admin (Periodic tasks) was reset by the next beat restart. Here a start
creates the rows a fresh database lacks, from settings, and leaves the existing
ones as the admin left them. An entry deleted in the admin comes back with its
default at the next start: disable it to stop it. CELERY_BEAT_SCHEDULE stays
the one list of defaults (the chaos tests' file-based beat reads it too).
"""
from __future__ import annotations

from typing import Any

from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry


class DefaultEntry(ModelEntry):
    @classmethod
    def from_entry(cls, name: str, app: Any = None, **entry: Any) -> ModelEntry:
        existing = PeriodicTask.objects.filter(name=name).first()
        if existing is not None:
            return cls(existing, app=app)
        options = dict(entry.pop("options", None) or {})
        if "expires" in options:  # Celery's option name; the model stores it as expire_seconds
            options["expire_seconds"] = options.pop("expires")
        created: ModelEntry = super().from_entry(name, app=app, options=options, **entry)
        return created


class OpieDatabaseScheduler(DatabaseScheduler):
    Entry = DefaultEntry
