"""The HTTP client webhook attempts share, one per process.

Building an `httpx.Client` loads the system's CA bundle into a new TLS
context: about 25-45 ms of CPU, which `httpx.post()` paid on every attempt.
One client per process pays it once, and its pool keeps connections alive
between attempts to the same receiver. `httpx.Client` is thread-safe, so the
worker's threads share it. A pool must not cross a fork: the child starts
without one and builds its own on first use, leaving the parent's sockets
alone.

Keep-alive does not weaken the SSRF guard: every attempt resolves and checks
the callback's host first (`ssrf.resolve_checked`), and plain http connects to
the checked IP, so a pooled connection is only ever to an address checked on
this attempt. For https the pool is keyed by the host name, as a fresh
connection's own DNS lookup was (see ssrf.py).
"""
from __future__ import annotations

import os
import threading
from http.cookiejar import Cookie, CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
from django.conf import settings


class _NoCookies(DefaultCookiePolicy):
    """A receiver's Set-Cookie is never kept: the client serves every user, and one user's
    receiver must not set what another user's webhooks carry (httpx.post() kept none either)."""

    def set_ok(self, cookie: Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Cookie, request: Any) -> bool:
        return False


_client: httpx.Client | None = None
_lock = threading.Lock()


def webhook_http_client(*, timeout: float) -> httpx.Client:
    """This process's client, built on first use with `timeout` (each request passes its own
    as well, so a changed setting applies at once); redirects are never followed."""
    global _client
    client = _client
    if client is None or client.is_closed:
        with _lock:
            client = _client
            if client is None or client.is_closed:
                size = settings.AGENTOS_WEBHOOK_MAX_CONNECTIONS
                client = _client = httpx.Client(
                    timeout=timeout, follow_redirects=False, cookies=CookieJar(policy=_NoCookies()),
                    limits=httpx.Limits(max_connections=size, max_keepalive_connections=size))
    return client


def reset_webhook_http_client() -> None:
    """Forget the client without closing it: after a fork its sockets are the parent's."""
    global _client, _lock
    _client, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=reset_webhook_http_client)
