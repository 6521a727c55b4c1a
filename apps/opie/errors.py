"""Error pages: JSON under /api/, HTML elsewhere."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"error": {"code": "not_found", "message": "No such endpoint."}}, status=404)
    return TemplateResponse(request, "opie/error.html", {"status": 404, "title": "Not found"}, status=404)


def forbidden(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"error": {"code": "forbidden", "message": "You may not do that."}}, status=403)
    return TemplateResponse(request, "opie/error.html", {"status": 403, "title": "Not allowed"}, status=403)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return TemplateResponse(request, "opie/error.html", {
        "status": 403, "title": "Form expired",
        "detail": "This form's security token is missing or out of date. Reload the page and try again."},
        status=403)


def server_error(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"error": {"code": "internal_error", "message": "Something went wrong on our side."}},
                            status=500)
    return TemplateResponse(request, "opie/error.html", {"status": 500, "title": "Server error"}, status=500)
