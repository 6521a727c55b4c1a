"""Test settings: the real servers, on a Redis database of their own so a
running `make run` and the tests never consume each other's messages."""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("OPIE_REDIS_DB", "15")
os.environ.setdefault("AGENTOS_REQUEUE_AFTER", "5")
# test databases are dropped at the end: no thread may keep a connection to them
os.environ.setdefault("DB_CONN_MAX_AGE", "0")
# one metrics directory per test run, shared by the test process (the web) and the worker
# processes it starts (they inherit this environment): a fresh deployment
if "OPIE_METRICS_DIR" not in os.environ:
    os.environ["OPIE_METRICS_DIR"] = tempfile.mkdtemp(prefix="opie-metrics-")
    atexit.register(shutil.rmtree, os.environ["OPIE_METRICS_DIR"], True)  # by the process that made it
# (like the web tier, the test process is unpooled; the worker processes the
# tests start are pooled as in production: tests/conftest.py)

from config.settings import *  # noqa: E402,F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# the live server serves static files as production does (WhiteNoise), from the apps' static folders
WHITENOISE_USE_FINDERS = True
