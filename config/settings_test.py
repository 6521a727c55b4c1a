"""Test settings: the real servers, on a Redis database of their own so a
running `make run` and the tests never consume each other's messages."""
import os

os.environ.setdefault("OPIE_REDIS_DB", "15")
os.environ.setdefault("AGENTOS_REQUEUE_AFTER", "5")
# test databases are dropped at the end: no thread may keep a connection to them
os.environ.setdefault("DB_CONN_MAX_AGE", "0")
# (like the web tier, the test process is unpooled; the worker processes the
# tests start are pooled as in production: tests/conftest.py)

from config.settings import *  # noqa: E402,F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# the live server serves static files as production does (WhiteNoise), from the apps' static folders
WHITENOISE_USE_FINDERS = True
