"""The real URLs plus views that fail, to see what a user gets from an unexpected error or a refusal."""
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import path

from config.urls import handler403, handler404, handler500  # noqa: F401 (Django reads them here)
from config.urls import urlpatterns as real


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("an unexpected failure")


def forbid(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied


urlpatterns = [path("agentos/boom/", boom), path("api/v1/agentos/boom/", boom), path("agentos/forbidden/", forbid),
               *real]
