from django.contrib import admin
from django.urls import include, path

from apps.api.api import api
from apps.opie.health import healthz, metrics, readyz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/v1/agentos/", api.urls),
    path("", include("apps.opie.urls")),
]

handler403 = "apps.opie.errors.forbidden"
handler404 = "apps.opie.errors.not_found"
handler500 = "apps.opie.errors.server_error"
