"""Redis pub/sub for job events: a nudge that a new event row exists, never the record.

Redis may lose everything, so a listener treats a message as "read the
database now" and re-reads the database every few seconds anyway. Every
failure here is logged and swallowed: losing a nudge costs latency, not data.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlparse

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger(__name__)

# how long a subscriber waits for Redis to confirm its SUBSCRIBE before giving up on it
_CONFIRM_SECONDS = 2.0
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


class Subscription:
    """A confirmed subscription to one job's channel.

    Entering it subscribes and waits for Redis to acknowledge, so a publish
    that happens after `__enter__` returns is never missed. When Redis is
    unreachable (or drops the connection later) the subscription degrades to
    a plain sleep and callers fall back on their database re-checks."""

    def __init__(self, public_id: str) -> None:
        self.channel = channel(public_id)
        self._pubsub: Any = None

    @property
    def live(self) -> bool:
        return self._pubsub is not None

    def __enter__(self) -> Subscription:
        pubsub = None
        try:
            pubsub = client().pubsub()
            pubsub.subscribe(self.channel)
            deadline = time.monotonic() + _CONFIRM_SECONDS
            while (left := deadline - time.monotonic()) > 0:
                message = pubsub.get_message(timeout=left)
                if message is not None and message.get("type") == "subscribe":
                    self._pubsub = pubsub
                    return self
            raise redis.TimeoutError("no SUBSCRIBE confirmation")
        except (redis.RedisError, OSError) as exc:
            logger.warning("%s: pub/sub unavailable (%s); polling the database instead", self.channel, exc)
            if pubsub is not None:
                self._close(pubsub)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            self._close(pubsub)

    @staticmethod
    def _close(pubsub: Any) -> None:
        try:
            pubsub.close()
        except (redis.RedisError, OSError):
            pass

    def wait(self, timeout: float) -> dict[str, Any] | None:
        """The next message on the channel (`{"seq": n, "type": ...}`, or
        `{"type": "content.delta", "text": ...}`), or None
        once `timeout` seconds pass without one."""
        deadline = time.monotonic() + max(0.0, timeout)
        while (left := deadline - time.monotonic()) > 0:
            if self._pubsub is None:
                time.sleep(left)
                return None
            try:
                message = self._pubsub.get_message(timeout=left)
            except (redis.RedisError, OSError) as exc:
                logger.warning("%s: pub/sub connection lost (%s); polling the database instead",
                               self.channel, exc)
                self.close()
                continue
            if message is None or message.get("type") != "message":
                continue
            try:
                payload = json.loads(message["data"])
            except (TypeError, ValueError):
                continue
            if isinstance(payload, dict):
                return payload
        return None
