"""The cache layer: read-through over Redis (Django's cache framework, django-redis)
for what requests read again and again, and invalidation on every write.

Keys follow `agentos_<type>_<identifier>` (Django adds KEY_PREFIX and version):

    agentos_agent_<public_id>    an agent's definition, for any viewer (agent_snapshot)
    agentos_perms_<user_id>      public ids of the enabled agents the user owns or that are
                                 shared with them
    agentos_perms_public         public ids of the enabled public agents; a user may use
                                 agentos_perms_<user_id> plus these
    agentos_session_<public_id>  a chat session's summary and its owner

Not here, on purpose: an agent's built configuration lives in each worker's
warm pool per (agent, version), where it is used (its resolved dict is cheaper
to compute from the row than to fetch from Redis); a knowledge base's status
has one reader, the agent sync, which must see the database.

Every entry lives AGENTOS_CACHE_TTL seconds at most. The rules:

- PostgreSQL is the truth. A miss, an error or an outage reads the database.
- A read inside a transaction bypasses the cache: it may see its own
  uncommitted writes, which must never be published, and must see them rather
  than an older cached copy.
- Writes invalidate after commit (`invalidate_on_commit`), so a rolled-back
  write changes nothing.
- A miss fills with a lease: it first claims the key with a unique token
  (SET NX), reads the database, then swaps its own token for the value
  (compare-and-set). An invalidation deletes the key, token included, so a
  reader that read the database before a write committed can never store
  what it read after that write's invalidation. Permissions are never stale
  after a write.
- Outage: django-redis ignores Redis errors (IGNORE_EXCEPTIONS). When this
  module sees one, the process reads the database without trying Redis for
  OUTAGE_BACKOFF seconds. Invalidations are always attempted; one lost to an
  outage is logged, and the entry it missed lives at most its TTL (a Redis
  that restarted has lost it anyway: it keeps nothing on disk).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Callable, Iterable, Mapping

from django.conf import settings
from django.core.cache import caches
from django.db import connection, transaction
from django_redis.cache import RedisCache

logger = logging.getLogger(__name__)

LEASE_MS = 10_000  # longer than any read it guards; a reader that dies only delays filling
OUTAGE_BACKOFF = 5.0  # seconds a process skips Redis after seeing it fail
_LEASE = "agentos-lease:"  # a lease's value; cached values are dicts and lists, never strings

PERMS_PUBLIC = "agentos_perms_public"


def agent_key(public_id: str) -> str:
    return f"agentos_agent_{public_id}"


def perms_key(user_id: int) -> str:
    return f"agentos_perms_{user_id}"


def session_key(public_id: str) -> str:
    return f"agentos_session_{public_id}"


# KEYS: the keys to claim; ARGV: the lease, its lifetime in ms. Returns the 1-based indexes claimed.
_CLAIM = """
local claimed = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then claimed[#claimed + 1] = i end
end
return claimed
"""
# KEYS: claimed keys; ARGV: the lease, the TTL in ms, then one value per key ('' = no row: release).
# Only a key still holding this reader's lease is written: an invalidation since the claim deleted it.
_FILL = """
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    local value = ARGV[i + 2]
    if value == '' then redis.call('DEL', key) else redis.call('SET', key, value, 'PX', ARGV[2]) end
  end
end
return 0
"""

_down_until: dict[str, float] = {}  # per cache LOCATION: a test's dead Redis does not trip the real one
_down_lock = threading.Lock()


def _location() -> str:
    return str(settings.CACHES.get("default", {}).get("LOCATION", ""))


def _backend() -> Any:
    return caches["default"]


def _supported() -> bool:
    """The lease needs django-redis; any other backend (a test's dummy cache) reads the database."""
    return isinstance(_backend(), RedisCache)


def known_down() -> bool:
    """Redis failed this process within the last OUTAGE_BACKOFF seconds: other
    best-effort users of the cache (the rate limiter) skip it too."""
    return time.monotonic() < _down_until.get(_location(), 0.0)


def _usable() -> bool:
    if connection.in_atomic_block or settings.AGENTOS_CACHE_TTL <= 0:
        return False
    return not known_down() and _supported()


def _trip(exc: BaseException) -> None:
    where, now = _location(), time.monotonic()
    with _down_lock:
        first = now >= _down_until.get(where, 0.0)
        _down_until[where] = now + OUTAGE_BACKOFF
    if first:
        logger.warning("cache unavailable (%s: %s); reading the database for the next %.0f s",
                       exc.__class__.__name__, exc, OUTAGE_BACKOFF)


def _claim(keys: list[str]) -> tuple[bytes, list[str]]:
    client = _backend().client
    lease = client.encode(f"{_LEASE}{uuid.uuid4().hex}", allow_int=False)
    raw = [client.make_key(key) for key in keys]
    claimed = client.get_client(write=True).eval(_CLAIM, len(raw), *raw, lease, LEASE_MS)
    return lease, [keys[int(i) - 1] for i in claimed]


def _fill(keys: list[str], lease: bytes, values: Mapping[str, Any]) -> None:
    client = _backend().client
    raw = [client.make_key(key) for key in keys]
    encoded = [client.encode(values[key], allow_int=False) if key in values else b"" for key in keys]
    client.get_client(write=True).eval(_FILL, len(raw), *raw, lease, settings.AGENTOS_CACHE_TTL * 1000, *encoded)


def read_many(keys: list[str], load: Callable[[list[str]], Mapping[str, Any]]) -> dict[str, Any]:
    """The value of each of `keys`: from the cache, else from `load(missing_keys)`,
    which returns the values it found by key (a key it leaves out does not exist
    and is not cached). Values must be picklable dicts or lists."""
    if not keys:
        return {}
    if not _usable():
        return dict(load(list(keys)))
    found = _backend().get_many(keys)  # an outage answers {}: the claim below finds out
    hits = {key: value for key, value in found.items() if not (isinstance(value, str) and value.startswith(_LEASE))}
    missing = [key for key in keys if key not in hits]
    if not missing:
        return hits
    try:
        lease, claimed = _claim(missing)
    except Exception as exc:  # the cache must never fail a read
        _trip(exc)
        lease, claimed = b"", []
    loaded = dict(load(missing))
    if claimed:
        try:
            _fill(claimed, lease, loaded)
        except Exception as exc:
            _trip(exc)
    return {**hits, **loaded}


def read(key: str, load: Callable[[], Any]) -> Any:
    """One key's value, or None when `load` finds nothing (None is never cached)."""
    def load_one(_: list[str]) -> dict[str, Any]:
        value = load()
        return {} if value is None else {key: value}

    return read_many([key], load_one).get(key)


def invalidate(keys: Iterable[str]) -> None:
    """Delete entries now. Never raises: the write that asks for it has committed."""
    todo = sorted(set(keys))
    if not todo or not _supported():
        return
    try:
        deleted = _backend().delete_many(todo)
    except Exception as exc:
        deleted = None
        logger.warning("cache invalidation raised %s", exc)
    if deleted is None:  # django-redis ignored a Redis error
        logger.warning("cache invalidation failed for %s; those entries may be stale until they expire "
                       "(AGENTOS_CACHE_TTL)", ", ".join(todo))


def invalidate_on_commit(keys: Iterable[str]) -> None:
    """Delete entries once the current transaction commits (at once outside one)."""
    todo = list(keys)
    transaction.on_commit(lambda: invalidate(todo))
