"""Django core settings."""
from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from config.env import ROOT_DIR, env_bool, env_list, env_str
from config.logging import logging_config

BASE_DIR = ROOT_DIR
DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not env_bool("OPIE_EMBEDDED", True):  # a real deployment: never invent a key
        raise ImproperlyConfigured("SECRET_KEY must be set when OPIE_EMBEDDED=0")
    # local runs without a .env: a per-checkout key, stable across restarts
    from config.local_secret import local_secret_key

    SECRET_KEY = local_secret_key()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "django_celery_results",
    "ninja",
    "apps.accounts",
    "apps.agents",
    "apps.chat",
    "apps.jobs",
    "apps.events",
    "apps.webhooks",
    "apps.knowledge",
    "apps.usage",
    "apps.schedules",
    "apps.opie",
]

# Django's own middleware, each run on the event loop for requests an async view answers
# (apps.opie.middleware.OnTheLoop): under ASGI a waiting client holds no thread
MIDDLEWARE = [
    "apps.opie.middleware.SecurityMiddleware",
    "apps.opie.middleware.TextInputGuard",  # NUL / lone surrogates: a 400, never a database error
    "apps.opie.middleware.StaticFiles",  # WhiteNoise, async-capable
    "apps.opie.middleware.SessionMiddleware",
    "apps.opie.middleware.CommonMiddleware",
    "apps.opie.middleware.CsrfViewMiddleware",
    "apps.opie.middleware.AuthenticationMiddleware",
    "apps.opie.middleware.MessageMiddleware",
    "apps.opie.middleware.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/agentos/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
CSRF_FAILURE_VIEW = "apps.opie.errors.csrf_failure"

SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)

# AGENTOS_DEBUG turns on detailed logging: every level defaults to DEBUG (an explicit
# LOG_LEVEL / AGNO_LOG_LEVEL still wins) and agno agents run in debug mode.
_DEBUG_LOGS = env_bool("AGENTOS_DEBUG", False)
LOG_LEVEL = env_str("LOG_LEVEL", "DEBUG" if _DEBUG_LOGS else "INFO")
# plain: `<time> <LEVEL> <logger> <message> job=… agent=… session=…`; json: one object per line
LOG_FORMAT = env_str("LOG_FORMAT", "plain").strip().lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: use plain or json")
LOGGING_CONFIG = "config.logging.configure"
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL,
                         agno_level=env_str("AGNO_LOG_LEVEL", "DEBUG" if _DEBUG_LOGS else "WARNING"))
# Redis errors the cache ignored: one WARNING line per outage window, not a traceback per call
LOGGING.setdefault("filters", {})["cache_outage"] = {"()": "config.logfilters.CacheOutageFilter"}
LOGGING.setdefault("loggers", {}).setdefault("opie.cache.redis", {})["filters"] = ["cache_outage"]
