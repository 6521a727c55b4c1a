"""API tokens: created, checked and revoked here only."""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from apps.accounts.models import ApiToken

TOKEN_PREFIX = "opie_"
_TOUCH_EVERY = timedelta(minutes=1)


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@transaction.atomic
def api_token_create(*, user: AbstractBaseUser, name: str = "default") -> tuple[ApiToken, str]:
    """Return the token row and the raw token; the raw value is never stored."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name[:100], prefix=raw[:12], digest=_digest(raw))
    return token, raw


def api_token_authenticate(*, raw: str) -> ApiToken | None:
    """The live token for `raw`, or None. Revocation takes effect at once (no cache)."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    digest = _digest(raw)
    token = (ApiToken.objects.select_related("user")
             .filter(digest=digest, revoked_at__isnull=True, user__is_active=True).first())
    if token is None or not constant_time_compare(token.digest, digest):
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > _TOUCH_EVERY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def api_token_revoke(*, token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
