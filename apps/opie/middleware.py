"""Text PostgreSQL cannot take is refused at the door, for every route at once.

PostgreSQL text and jsonb cannot hold a NUL character, and a lone UTF-16
surrogate (a JSON `\\ud800` escape decodes to one) cannot be encoded as UTF-8:
either reaching a query or a write ends in a database error, a 500. So a request
whose path, query, form fields, file names or JSON body strings carry one is a
400 `invalid_input` before any view runs (nothing is half-written)."""
from __future__ import annotations

import json
import re
from typing import Any, AsyncIterator, Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.middleware import clickjacking, common, csrf, security
from django.urls import Resolver404, resolve
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
            return await sync_to_async(lambda: _served_whole(self.serve(static_file, request)))()
        get_response: Callable[[HttpRequest], Awaitable[HttpResponse]] = self.get_response
        return await get_response(request)


def _served_whole(response: HttpResponse) -> HttpResponse:
    """A static file read in one go on a thread, as an async response can send it:
    Django would otherwise hop to a thread for every block of the file's iterator
    (and warn that it does). The files WhiteNoise serves are the app's own assets."""
    if response.streaming and not response.is_async:  # type: ignore[attr-defined]
        # the file itself closes with the response
        body = b"".join(response.streaming_content)  # type: ignore[attr-defined]

        async def whole() -> AsyncIterator[bytes]:
            yield body

        response.streaming_content = whole()  # type: ignore[attr-defined]
    return response


def serves_async_view(request: HttpRequest) -> bool:
    """Whether an async view (a coroutine: the API's hot endpoints, the streams) will
    answer this request; resolved once per request."""
    known = getattr(request, "_opie_async_view", None)
    if known is None:
        try:
            match = resolve(request.path_info, getattr(request, "urlconf", None))
        except Resolver404:
            known = False
        else:
            known = iscoroutinefunction(match.func)
        request._opie_async_view = known  # type: ignore[attr-defined]
    return known


class OnTheLoop:
    """Mixed into Django's own middleware (MIDDLEWARE lists the results below).

    Under ASGI, Django's MiddlewareMixin hands every process_request and
    process_response to a thread and back: about a dozen hops per request
    through this stack, most of what an async view's request costs. For a
    request an async view answers, these hooks only read headers and set
    attributes, so here they run on the event loop; a hook that would write
    (a modified session, stored messages) still goes to a thread. Requests
    for sync views keep Django's behaviour: they need a thread anyway."""

    async_mode: bool

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        if not serves_async_view(request):
            return await super().__acall__(request)  # type: ignore[misc,no-any-return]
        response = self.process_request(request) if hasattr(self, "process_request") else None
        response = response or await self.get_response(request)  # type: ignore[attr-defined]
        if hasattr(self, "process_response"):
            if self.writes(request):
                return await sync_to_async(self.process_response)(request, response)
            response = self.process_response(request, response)
        return response  # type: ignore[no-any-return]

    def writes(self, request: HttpRequest) -> bool:
        """Whether process_response would do I/O for this request."""
        return False


class SecurityMiddleware(OnTheLoop, security.SecurityMiddleware):
    pass


class SessionMiddleware(OnTheLoop, sessions.SessionMiddleware):
    def writes(self, request: HttpRequest) -> bool:
        session = getattr(request, "session", None)
        return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class CommonMiddleware(OnTheLoop, common.CommonMiddleware):
    pass


class CsrfViewMiddleware(OnTheLoop, csrf.CsrfViewMiddleware):
    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        super().__init__(get_response)
        if self.async_mode:  # Django adapts process_view once, when it loads the middleware
            self.process_view = self._process_view_async  # type: ignore[method-assign]

    async def _process_view_async(self, request: HttpRequest, callback: Any, args: Any, kwargs: Any) -> Any:
        if serves_async_view(request):  # csrf-exempt API views return at once; a stream is a GET
            return super().process_view(request, callback, args, kwargs)
        return await sync_to_async(super().process_view)(request, callback, args, kwargs)


class AuthenticationMiddleware(OnTheLoop, auth.AuthenticationMiddleware):
    pass


class MessageMiddleware(OnTheLoop, messages.MessageMiddleware):
    def writes(self, request: HttpRequest) -> bool:
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)


class XFrameOptionsMiddleware(OnTheLoop, clickjacking.XFrameOptionsMiddleware):
    pass
