"""Every API error is `{"error": {"code": ..., "message": ...}}` with a stable code."""
from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from apps.common import DomainError

logger = logging.getLogger(__name__)

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 429: "rate_limited",
               503: "unavailable"}


def error_response(status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, **extra}}, status=status)


def _validation_message(errors: list[dict[str, Any]]) -> str:
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", []) if part not in ("body", "payload", "query"))
    return f"{where}: {first.get('msg', 'invalid value')}" if where else str(first.get("msg", "invalid input"))


def install_error_handlers(api: NinjaAPI) -> None:
    @api.exception_handler(DomainError)
    def domain_error(request: HttpRequest, exc: DomainError) -> HttpResponse:
        response = error_response(exc.status, exc.code, exc.message)
        if getattr(exc, "retry_after", None):
            response["Retry-After"] = str(exc.retry_after)  # type: ignore[attr-defined]
        return response

    @api.exception_handler(ValidationError)
    def validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        details = [{"loc": [str(p) for p in e.get("loc", [])], "msg": str(e.get("msg", ""))}
                   for e in exc.errors]
        return error_response(400, "invalid_input", _validation_message(exc.errors), details=details)

    @api.exception_handler(AuthenticationError)
    def authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        response = error_response(401, "unauthorized", "A valid API token is required (Authorization: Bearer ...).")
        response["WWW-Authenticate"] = "Bearer"
        return response

    @api.exception_handler(HttpError)
    def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        if exc.status_code == 400 and str(exc).startswith("Cannot parse request body"):
            return error_response(400, "malformed_json", "The request body is not valid JSON.")
        return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "error"), str(exc))

    @api.exception_handler(RequestDataTooBig)
    def body_too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
        return error_response(413, "payload_too_large", f"The request body is larger than "
                              f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes (DATA_UPLOAD_MAX_MEMORY_SIZE).")

    @api.exception_handler(Http404)
    def not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
        return error_response(404, "not_found", "Not found.")

    @api.exception_handler(Exception)
    def unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
        if isinstance(exc, (OperationalError, InterfaceError)) or type(exc) is DatabaseError:
            logger.warning("database unavailable: %s", exc)
            return error_response(503, "database_unavailable", "The database is unavailable; retry shortly.")
        logger.exception("unhandled API error")
        return error_response(500, "internal_error", "Something went wrong on our side.")
