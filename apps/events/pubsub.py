"""Redis pub/sub for job events: a nudge that a new event row exists, never the record.

Redis may lose everything, so a listener treats a message as "read the
database now" and re-reads the database every few seconds anyway (the web
processes listen through apps.events.hub). Every failure here is logged and
swallowed: losing a nudge costs latency, not data.
"""
from __future__ import annotations

import json
import logging
import threading
from urllib.parse import parse_qs, urlparse

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger(__name__)

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def redis_url(url: str) -> str:
    """redis-py's spelling of the URL: kombu's `redis+socket://path?virtual_host=N`
    (the broker URL, which REDIS_URL may fall back to) becomes `unix://path?db=N`."""
    parsed = urlparse(url)
    if parsed.scheme != "redis+socket":
        return url
    db = parse_qs(parsed.query).get("virtual_host", ["0"])[-1] or "0"
    return f"unix://{parsed.path}?db={db}"


def client() -> redis.Redis:
    """One client (and connection pool) per URL per process; thread-safe."""
    url = redis_url(settings.REDIS_URL)
    with _clients_lock:
        if url not in _clients:
            # short timeouts and one retry: a dead Redis must not stall a commit or a request
            _clients[url] = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2,
                                                 retry=Retry(NoBackoff(), 1))
        return _clients[url]


def channel(public_id: str) -> str:
    return f"opie:job:{public_id}"


def publish(*, public_id: str, seq: int, type: str) -> None:
    try:
        client().publish(channel(public_id), json.dumps({"seq": seq, "type": type}))
    except (redis.RedisError, OSError) as exc:
        logger.warning("job %s: event %s not published (%s); listeners will re-read the database",
                       public_id, seq, exc)


CONTENT_DELTA = "content.delta"


def publish_content(*, public_id: str, text: str) -> int | None:
    """Ephemeral `content.delta`: the reply's text so far, on pub/sub only (no
    row, no seq: it is not replayed; the final reply is in the terminal event).
    The whole text rather than the piece, so a listener that joins late is at
    once consistent. Returns how many listeners got it, or None when Redis is
    unreachable (the caller stops trying)."""
    try:
        return int(client().publish(channel(public_id), json.dumps({"type": CONTENT_DELTA, "text": text})))
    except (redis.RedisError, OSError) as exc:
        logger.warning("job %s: content delta not published (%s); the reply comes with the terminal event",
                       public_id, exc)
        return None
