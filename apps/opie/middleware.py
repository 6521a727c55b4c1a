"""Text PostgreSQL cannot take is refused at the door, for every route at once.

PostgreSQL text and jsonb cannot hold a NUL character, and a lone UTF-16
surrogate (a JSON `\\ud800` escape decodes to one) cannot be encoded as UTF-8:
either reaching a query or a write ends in a database error, a 500. So a request
whose path, query, form fields, file names or JSON body strings carry one is a
400 `invalid_input` before any view runs (nothing is half-written)."""
from __future__ import annotations

import json
import re
from typing import Any, Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from whitenoise.middleware import WhiteNoiseMiddleware

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


def _refusal(request: HttpRequest, form: list[str]) -> HttpResponse | None:
    query = [text for key, items in request.GET.lists() for text in (key, *items)]
    if has_bad_text([request.path, *query, *form]) or has_bad_text(_json_body(request)):
        if request.path.startswith("/api/"):
            return JsonResponse({"error": {"code": "invalid_input", "message": MESSAGE}}, status=400)
        return HttpResponseBadRequest(MESSAGE)
    return None


class TextInputGuard:
    """Sync and async: under ASGI it checks on the event loop (a form, whose parsing
    may spool an upload to disk, is parsed on a thread), so a request served by an
    async view is not handed to a thread for the rest of its life."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        return _refusal(request, _form(request)) or self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        form = await sync_to_async(_form)(request) if request.method == "POST" else []
        return _refusal(request, form) or await self.get_response(request)


class StaticFiles(WhiteNoiseMiddleware):
    """WhiteNoise, async-capable: its own middleware is sync only, which under ASGI
    makes Django run every later layer of every request inside a thread. Static
    files are served on a thread; everything else passes straight through."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(get_response, *args, **kwargs)
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        return super().__call__(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        static_file = (self.find_file(request.path_info) if self.autorefresh
                       else self.files.get(request.path_info))
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)
        get_response: Callable[[HttpRequest], Awaitable[HttpResponse]] = self.get_response
        return await get_response(request)
