"""`Idempotency-Key` on POSTs that create work.

The same key with the same body replays the first response (same job_id) for
AGENTOS_IDEMPOTENCY_TTL; with a different body it is a 409
`idempotency_key_reused`. Keys are per user. The record and the work are
written in one transaction, so a concurrent duplicate waits on the unique
index and then replays the committed response: there is no window in which
both create work.
"""
from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any, Callable

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.http import HttpRequest, JsonResponse
from django.http.request import RawPostDataException
from django.utils import timezone

from apps.common import DomainError
from apps.jobs.models import IdempotencyRecord

HEADER = "Idempotency-Key"
MAX_KEY = 255


def _fingerprint(request: HttpRequest) -> str:
    digest = hashlib.sha256(request.method.encode() + b" " + request.path.encode() + b"\n")
    try:
        digest.update(request.body)
    except RawPostDataException:
        # a form body, parsed from the stream before the view ran (apps.opie.middleware's
        # guard reads every POSTed form): the same form, field by field and file by file
        for name, values in sorted(request.POST.lists()):
            digest.update(json.dumps([name, values]).encode())
        for name, uploads in sorted(request.FILES.lists()):
            for upload in uploads:
                digest.update(json.dumps([name, upload.name, upload.size]).encode())
                for chunk in upload.chunks():
                    digest.update(chunk)
                upload.seek(0)
    return digest.hexdigest()


def _replay(record: IdempotencyRecord, fingerprint: str) -> JsonResponse:
    if record.request_hash != fingerprint:
        raise DomainError("idempotency_key_reused",
                          "This Idempotency-Key was used with a different request.", status=409)
    response = JsonResponse(record.response_body, status=record.response_status or 200, safe=False)
    response["Idempotent-Replayed"] = "true"
    return response


def idempotent(request: HttpRequest, create: Callable[[], tuple[int, Any]], *,
               user: AbstractBaseUser | None = None) -> Any:
    """Run `create` (which returns (status, body)) at most once per user and key. The
    user is the request's token's, or `user` for a request that carries none (an
    inbound hook acts for its owner)."""
    key = request.headers.get(HEADER)
    if key is None:
        return create()
    if not key.strip() or len(key) > MAX_KEY:
        raise DomainError("invalid_idempotency_key", f"{HEADER} must be 1 to {MAX_KEY} characters.")
    user, fingerprint = user or request.auth, _fingerprint(request)  # type: ignore[attr-defined]
    cutoff = timezone.now() - timedelta(seconds=settings.AGENTOS_IDEMPOTENCY_TTL)
    IdempotencyRecord.objects.filter(owner=user, key=key, created_at__lt=cutoff).delete()
    with transaction.atomic():
        try:
            with transaction.atomic():
                # blocks while a concurrent request with this key is uncommitted
                record = IdempotencyRecord.objects.create(owner=user, key=key, request_hash=fingerprint,
                                                          method_path=f"{request.method} {request.path}"[:300])
        except IntegrityError:
            existing = IdempotencyRecord.objects.filter(owner=user, key=key).first()
            if existing is None or existing.response_status is None:
                raise DomainError("idempotency_key_in_flight", "A request with this key is still running.",
                                  status=409) from None
            return _replay(existing, fingerprint)
        status, body = create()
        record.response_status, record.response_body = status, body
        record.save(update_fields=["response_status", "response_body"])
        return status, body
