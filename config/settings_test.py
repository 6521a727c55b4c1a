"""Test settings: the real servers, on a Redis database of their own so a
running `make run` and the tests never consume each other's messages."""
import os

os.environ.setdefault("OPIE_REDIS_DB", "15")
os.environ.setdefault("AGENTOS_REQUEUE_AFTER", "5")
# test databases are dropped at the end: no thread may keep a connection to them
os.environ.setdefault("DB_CONN_MAX_AGE", "0")
# nor a pool in the test process (its tests open and drop databases); the worker
# processes the tests start are pooled as in production (tests/conftest.py)
os.environ.setdefault("DB_POOL_SIZE", "0")

from config.settings import *  # noqa: E402,F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
