"""Per-token limit on job creation: a fixed one-minute window counted in Redis.

Fails open: if Redis is unreachable the request is let through (the database
is the source of truth; the limit protects cost, not correctness)."""
from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

from apps.cache import known_down
from apps.common import DomainError

logger = logging.getLogger(__name__)
WINDOW = 60


class RateLimited(DomainError):
    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__("rate_limited", f"Too many job requests for this token; retry in {retry_after} s.")
        self.retry_after = retry_after


def check_job_rate(request: HttpRequest) -> None:
    limit = settings.AGENTOS_RATE_LIMIT_PER_MINUTE
    token = getattr(request, "api_token", None)
    if limit <= 0 or token is None or known_down():  # a Redis known to be down costs no timeout here
        return
    now = time.time()
    window = int(now // WINDOW)
    key = f"ratelimit:jobs:{token.pk}:{window}"
    try:
        cache.add(key, 0, timeout=WINDOW + 5)
        count = cache.incr(key)
    except Exception:
        logger.warning("rate limiter unavailable; letting the request through", exc_info=True)
        return
    if count is None:  # the cache ignored a Redis error (IGNORE_EXCEPTIONS): fail open
        return
    if count > limit:
        raise RateLimited(retry_after=max(1, int((window + 1) * WINDOW - now) + 1))
