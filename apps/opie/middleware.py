"""Text PostgreSQL cannot take is refused at the door, for every route at once.

PostgreSQL text and jsonb cannot hold a NUL character, and a lone UTF-16
surrogate (a JSON `\\ud800` escape decodes to one) cannot be encoded as UTF-8:
either reaching a query or a write ends in a database error, a 500. So a request
whose path, query, form fields, file names or JSON body strings carry one is a
400 `invalid_input` before any view runs (nothing is half-written)."""
from __future__ import annotations

import json
import re
from typing import Any, Callable

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

_BAD = re.compile("[\x00\ud800-\udfff]")
MESSAGE = "text must not contain NUL characters or unpaired UTF-16 surrogates."


def has_bad_text(data: Any) -> bool:
    """True if any string in `data` (nested dicts and lists, keys included) is unstorable."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _BAD.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _json_body(request: HttpRequest) -> Any:
    if "json" not in (request.content_type or ""):
        return None
    try:
        return json.loads(request.body)
    except (ValueError, RecursionError, RequestDataTooBig):
        return None  # malformed or too large: the view answers that, as it would without this guard


def _form(request: HttpRequest) -> list[str]:
    if request.method != "POST" or request.content_type not in ("multipart/form-data",
                                                                "application/x-www-form-urlencoded"):
        return []
    values = [text for key, items in request.POST.lists() for text in (key, *items)]
    return values + [upload.name or "" for uploads in request.FILES.lists() for upload in uploads[1]]


class TextInputGuard:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = [text for key, items in request.GET.lists() for text in (key, *items)]
        if has_bad_text([request.path, *query, *_form(request)]) or has_bad_text(_json_body(request)):
            if request.path.startswith("/api/"):
                return JsonResponse({"error": {"code": "invalid_input", "message": MESSAGE}}, status=400)
            return HttpResponseBadRequest(MESSAGE)
        return self.get_response(request)
