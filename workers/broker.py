"""A worker must ride out a broker restart (Redis may lose everything and come back).

kombu/celery 5.7: on a broker connection loss the consumer calls
`Connection.collect()` and then `Connection.close()`. When the first close of the
default channel fails half-way (Redis is gone), collect() still drops the
transport's client, and close() tries again: restoring the unacked messages builds
connection parameters from that client, `None.hostname` raises AttributeError, which
is not a connection error, and the worker dies ("Unrecoverable error") instead of
reconnecting. Task threads acking after that hit the same AttributeError.
tests/test_chaos.py scenario 2 (Redis SIGKILLed and restarted) showed it.

Raise the connection error it really is: kombu and celery ignore or log those, the
consumer reconnects, and the messages it could not restore are re-sent from
PostgreSQL by the sweeper (they were lost with Redis anyway).
"""
from __future__ import annotations

from typing import Any

from kombu.transport import redis as transport
from redis.exceptions import ConnectionError as RedisConnectionError


def patch_redis_channel() -> None:
    original = transport.Channel._connparams
    if getattr(original, "opie_patched", False):
        return

    def _connparams(self: Any, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection was closed")
        return original(self, asynchronous=asynchronous)

    _connparams.opie_patched = True  # type: ignore[attr-defined]
    transport.Channel._connparams = _connparams
