"""PostgreSQL, Redis and the cache: from the environment, else the embedded servers."""
from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlparse

from config.env import env_bool, env_float, env_int, env_str

# connections per process, pooled; 0 (the default): no pool (see database_from_url)
DB_POOL_SIZE = env_int("DB_POOL_SIZE", 0)
# threads per web process for sync work (sync views, middleware, the ORM calls of async
# views), each with a persistent connection; waiting clients hold none (config/asgi.py)
WEB_THREADS = env_int("WEB_THREADS", 16)
# the web's garbage collector (config/asgi.py, at start-up): gen0,gen1,gen2 thresholds. With
# thousands of waiters open, a full collection walks every live object and stopped the event
# loop for 0.5-1 s, every second or two, on a 2-core machine; these make full collections
# about a thousand times rarer (Python's defaults: 700,10,10) and keep young ones short
WEB_GC_THRESHOLDS = tuple(int(part) for part in env_str("WEB_GC_THRESHOLDS", "5000,20,1000").split(","))


def database_from_url(url: str) -> dict[str, object]:
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {parsed.scheme!r}")
    query = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
    host = query.pop("host", None) or (parsed.hostname or "")
    options: dict[str, object] = {"connect_timeout": env_int("DB_CONNECT_TIMEOUT", 5), **query}
    # Parameters travel apart from the SQL (server-side binding) and a statement a connection
    # runs DB_PREPARE_THRESHOLD times is prepared there (psycopg), so PostgreSQL plans each hot
    # statement once per connection instead of once per call, and no parameter is quoted into
    # SQL text by Python: about a quarter less PostgreSQL CPU per job (docs/benchmarks.md).
    # Behind a pooler in transaction mode (PgBouncer before 1.21), set DB_PREPARE_THRESHOLD=0.
    options["server_side_binding"] = env_bool("DB_SERVER_SIDE_BINDING", True)
    prepare_threshold = env_int("DB_PREPARE_THRESHOLD", 5)
    options["prepare_threshold"] = prepare_threshold if prepare_threshold > 0 else None
    # A pool of at most DB_POOL_SIZE connections per process (psycopg_pool through
    # Django), for the agents worker: its hundreds of threads share a few
    # connections, each held only for a job's short database phases, and
    # "closing" one returns it to the pool instead of paying PostgreSQL a new
    # backend per phase. Off (0) elsewhere: the web's fixed threads keep
    # persistent connections (DB_CONN_MAX_AGE), and while PostgreSQL is down an
    # unpooled request fails at once with 503, where a pool would make it wait
    # DB_POOL_TIMEOUT for a connection it cannot open.
    if DB_POOL_SIZE > 0:
        options["pool"] = {"min_size": min(2, DB_POOL_SIZE), "max_size": DB_POOL_SIZE,
                           "timeout": env_float("DB_POOL_TIMEOUT", 10.0)}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")),
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": host,
        "PORT": str(parsed.port or ""),
        "CONN_MAX_AGE": 0 if DB_POOL_SIZE > 0 else env_int("DB_CONN_MAX_AGE", 60),  # a pooled one is reused anyway
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": options,
        "TEST": {"NAME": env_str("TEST_DATABASE_NAME") or None},
    }


DATABASE_URL = env_str("DATABASE_URL")
REDIS_URL = env_str("REDIS_URL")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
OPIE_EMBEDDED = not (DATABASE_URL and (REDIS_URL or CELERY_BROKER_URL)) and env_bool("OPIE_EMBEDDED", True)

if OPIE_EMBEDDED:
    from config import embedded

    _emb = embedded.ensure_running()
    DATABASE_URL = DATABASE_URL or _emb.database_url
    REDIS_URL = REDIS_URL or _emb.redis_url(env_int("OPIE_REDIS_DB", 0))
    CELERY_BROKER_URL = CELERY_BROKER_URL or _emb.broker_url(env_int("OPIE_REDIS_DB", 0))
elif not DATABASE_URL:
    raise RuntimeError("DATABASE_URL is not set and OPIE_EMBEDDED is off")

REDIS_URL = REDIS_URL or CELERY_BROKER_URL
CELERY_BROKER_URL = CELERY_BROKER_URL or REDIS_URL

DATABASES = {"default": database_from_url(DATABASE_URL)}

# Redis is a cache here, never the truth: when it is unreachable, reads miss and
# writes are dropped (IGNORE_EXCEPTIONS) so requests fall back to the database
# instead of failing, and short socket timeouts keep a dead Redis from stalling them.
CACHE_SOCKET_TIMEOUT = env_float("CACHE_SOCKET_TIMEOUT", 0.5)
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "opie",
        "TIMEOUT": env_int("AGENTOS_CACHE_TTL", 1800),
        "OPTIONS": {
            "IGNORE_EXCEPTIONS": True,
            "SOCKET_CONNECT_TIMEOUT": CACHE_SOCKET_TIMEOUT,
            "SOCKET_TIMEOUT": CACHE_SOCKET_TIMEOUT,
        },
    }
}
# an ignored Redis error is logged (at WARNING, throttled: config.logfilters) on this logger
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
DJANGO_REDIS_LOGGER = "opie.cache.redis"
