"""Small helpers shared by every app."""
from __future__ import annotations

import base64
import binascii
import functools
import secrets
from datetime import datetime
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection
from django.db.models import Model, Q, QuerySet


def public_id(prefix: str) -> str:
    """An unguessable public id such as `agent-3f9c2a7d41be`: never a sequential key."""
    return f"{prefix}-{secrets.token_hex(6)}"


class DomainError(Exception):
    """A refusal with a stable machine-readable code; the API maps it to JSON."""

    status = 400

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        if status is not None:
            self.status = status


class NotFound(DomainError):
    status = 404

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}_not_found", f"No such {what.replace('_', ' ')}.")


class AgentOSDisabled(DomainError):
    """AGENTOS_ENABLED=False: the API answers 503 `agentos_disabled`, the web pages a 503 page."""

    status = 503

    def __init__(self) -> None:
        super().__init__("agentos_disabled", "The AgentOS integration is turned off (AGENTOS_ENABLED=False).")


def agentos_enabled_check() -> None:
    """The one reading of AGENTOS_ENABLED on a request's path, for the API and the web pages alike."""
    if not settings.AGENTOS_ENABLED:
        raise AgentOSDisabled()


def fetch_instances(sql: str, params: list[Any], *models: type[Model],
                    fields: dict[type[Model], list[str]] | None = None) -> list[Model | None] | None:
    """The first row of `sql` as model instances, one per model, or None when it finds no row.

    The hot path's lookups (a token, a job) are one indexed read for PostgreSQL,
    but compiling the ORM's query costs ten times more CPU than running it: these
    selectors write their SQL once and build instances straight from the row
    (`Model.from_db`), like Django does. The row's columns are each model's
    `columns(model, fields)` in order; a model whose primary key is NULL (a LEFT
    JOIN that found nothing) comes back as None."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    instances: list[Model | None] = []
    start = 0
    for model in models:
        wanted = (fields or {}).get(model)
        names, converted = _shape(model, tuple(wanted) if wanted is not None else None)
        values = list(row[start:start + len(names)])
        start += len(names)
        if values[0] is None:
            instances.append(None)
            continue
        for index, field in converted:  # what the ORM's compiler applies (a JSONField parses its text)
            if values[index] is not None:
                values[index] = field.from_db_value(values[index], None, connection)
        instances.append(model.from_db(connection.alias, names, values))
    return instances


def columns(model: type[Model], alias: str, fields: list[str] | None = None) -> str:
    """`alias.column, ...` for the model's concrete fields (or just `fields`), primary key first."""
    names, _ = _shape(model, tuple(fields) if fields is not None else None)
    return ", ".join(f"{alias}.{model._meta.get_field(name).column}" for name in names)


@functools.cache
def _shape(model: type[Model], fields: tuple[str, ...] | None) -> tuple[list[str], list[tuple[int, Any]]]:
    """The attribute names a row brings for `model` (primary key first), and which of them
    need their field's `from_db_value`: worked out once per model, not on every row."""
    if fields is not None:
        names = [model._meta.pk.attname, *(name for name in fields if name != model._meta.pk.attname)]
    else:
        names = [field.attname for field in model._meta.concrete_fields]
    converted = [(index, model._meta.get_field(name)) for index, name in enumerate(names)
                 if hasattr(model._meta.get_field(name), "from_db_value")]
    return names, converted


M = TypeVar("M", bound=Model)
_INSERTS: dict[type[Model], tuple[str, list[Any]]] = {}


def insert_new(instance: M) -> M:
    """INSERT a new instance as `Model.save()` would for a plain insert (its defaults and
    auto_now fields applied, each value prepared by its field), in one statement
    written once per model: for the few rows every message writes, where composing
    the ORM's INSERT cost three times running it. It sends no save signals (Opie
    connects none); the instance comes back saved, with its primary key."""
    model = type(instance)
    if model not in _INSERTS:
        meta = model._meta
        fields = [field for field in meta.local_concrete_fields if not (field.primary_key and field.db_returning)]
        quote = connection.ops.quote_name
        _INSERTS[model] = (f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
                           f"VALUES ({', '.join(['%s'] * len(fields))}) RETURNING {quote(meta.pk.column)}", fields)
    sql, fields = _INSERTS[model]
    params = [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        instance.pk = cursor.fetchone()[0]
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance


def _encode_cursor(created_at: datetime, pk: int) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{pk}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        stamp, pk = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(stamp), int(pk)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise DomainError("invalid_cursor", "cursor is not one this API returned.") from exc


def page_newest_first(rows: QuerySet[Any], cursor: str | None, limit: int) -> tuple[list[Any], str | None]:
    """A page of `rows` and the cursor of the next one (None: the last): newest first,
    keyed on (created_at, id) so pages never skip or repeat."""
    rows = rows.order_by("-created_at", "-id")
    if cursor:
        stamp, pk = _decode_cursor(cursor)
        rows = rows.filter(Q(created_at__lt=stamp) | Q(created_at=stamp, id__lt=pk))
    page = list(rows[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return page, (_encode_cursor(page[-1].created_at, page[-1].pk) if more and page else None)
