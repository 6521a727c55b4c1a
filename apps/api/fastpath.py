"""A job's status for its owner without the middleware stack: what polling clients ask most.

`GET /api/v1/agentos/jobs/<job_id>/` is the request a client polling once a
second repeats for as long as its job waits. Through Django's handler, its
middleware, the URL resolver and the API framework it costs the web about
twice the CPU of the work it needs (authenticate the token, read the job,
render it), and under a backlog those polls are most of the web's CPU.

`job_status` serves it in one call on the web's threads, with the view's own
code: the token as `BearerToken` authenticates it (revocation at once, the
last-used touch), `AgentOSService.get_job`, the same schema and renderer, and
the headers the security middleware adds. It answers only the plain case: a
GET with no query string from an allowed host, a live token, the caller's own
job, AGENTOS_ENABLED. Anything else (no or a bad token, someone else's job, a
database error, a query string, a host the settings refuse, settings whose
headers depend on the request such as HSTS or an SSL redirect) returns None
and the request takes the full stack, which answers it as it always has; so
every error keeps its one code and shape.
"""
from __future__ import annotations

import functools
import re
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.request import split_domain_port, validate_host
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware

from apps.accounts.services import api_token_authenticate
from apps.api.api import api
from apps.api.auth import BearerToken
from apps.api.schemas import JobOut
from apps.common import DomainError, agentos_enabled_check
from apps.opie.agentos.service import AgentOSService

PATH = re.compile(r"/api/v1/agentos/jobs/(job-[0-9a-f]{12})/")
ROUTE = "api/v1/agentos/jobs/<job_id>/"


def job_id_of(scope: dict[str, Any]) -> str | None:
    """The job id when `scope` is a request this path may answer, else None."""
    if scope["method"] != "GET" or scope.get("query_string") or not (
            match := PATH.fullmatch(scope["path"])):
        return None
    return match.group(1)


def job_status(scope: dict[str, Any], job_id: str) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
    """(body, headers) of the 200 the API would give, or None to leave the request to it. Sync: on a web thread."""
    if _request_dependent():
        return None
    headers = dict(scope["headers"])
    if not _host_allowed(headers.get(b"host", b"").decode("latin-1")):
        return None
    # split as ninja's HttpBearer splits it: "Bearer <token>", the token as it stands
    scheme, _, raw = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() != BearerToken.openapi_scheme or not (token := api_token_authenticate(raw=raw)):
        return None
    try:
        agentos_enabled_check()
        job = AgentOSService(token.user).get_job(job_id)
    except DomainError:  # the integration off, someone else's or no such job: the API's 503 or 404
        return None
    body = api.renderer.render(None, JobOut.model_validate(job).model_dump(),  # type: ignore[arg-type]
                               response_status=200).encode()
    return body, [(b"content-length", str(len(body)).encode()), *_headers(*_header_settings())]


def _request_dependent() -> bool:
    """Settings under which the middleware's answer depends on the request (its scheme, a proxy's header)."""
    return bool(settings.SECURE_HSTS_SECONDS or settings.SECURE_SSL_REDIRECT or settings.USE_X_FORWARDED_HOST
                or settings.SECURE_PROXY_SSL_HEADER)


def _host_allowed(host: str) -> bool:
    """As `HttpRequest.get_host()` decides it (a refused host is Django's 400 on the full stack)."""
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed)


def _header_settings() -> tuple[Any, ...]:
    return (settings.SECURE_CONTENT_TYPE_NOSNIFF, settings.SECURE_REFERRER_POLICY,
            settings.SECURE_CROSS_ORIGIN_OPENER_POLICY, settings.X_FRAME_OPTIONS)


@functools.lru_cache(maxsize=8)
def _headers(*_settings: Any) -> list[tuple[bytes, bytes]]:
    """A JSON response's headers after Django's own security and clickjacking middleware."""
    response = HttpResponse(content_type="application/json; charset=utf-8")
    request = HttpRequest()
    response = SecurityMiddleware(lambda _r: response).process_response(request, response)
    response = XFrameOptionsMiddleware(lambda _r: response).process_response(request, response)
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.items()]
