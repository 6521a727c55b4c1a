"""API tokens: created, checked and revoked here only."""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from apps.accounts.models import ApiToken
from apps.common import columns, fetch_instances

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


# every API request starts here: one statement written once (see apps.common.fetch_instances)
_LIVE_TOKEN_SQL = (
    f"SELECT {columns(ApiToken, 't')}, {columns(get_user_model(), 'u')} FROM {ApiToken._meta.db_table} t "
    f"JOIN {get_user_model()._meta.db_table} u ON u.id = t.user_id "
    f"WHERE t.digest = %s AND t.revoked_at IS NULL AND u.is_active")


def api_token_authenticate(*, raw: str) -> ApiToken | None:
    """The live token for `raw`, or None. Revocation takes effect at once (no cache)."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    digest = _digest(raw)
    found = fetch_instances(_LIVE_TOKEN_SQL, [digest], ApiToken, get_user_model())
    if found is None:
        return None
    token, user = found
    if not constant_time_compare(token.digest, digest):  # type: ignore[union-attr]
        return None
    token.user = user  # type: ignore[union-attr]
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > _TOUCH_EVERY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def api_token_revoke(*, token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
