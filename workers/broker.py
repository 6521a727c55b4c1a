"""Two fixes to kombu's Redis transport (5.x), applied in every process that talks to the broker.

1. A worker must ride out a broker restart (Redis may lose everything and come back).

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

2. A client per command. kombu builds a new `redis.Redis` for every publish, ack
and task event that is not handed a client (`Channel.conn_or_acquire`), and
redis-py's constructor, with its table of response callbacks, costs about as
much as the command itself (165 µs here, four or five per job). A client is only
a handle on the channel's connection pool and is safe to share between
threads, so each channel keeps one per pool and builds another only when its
pool is replaced (after a reconnect).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from kombu.transport import redis as transport
from redis.exceptions import ConnectionError as RedisConnectionError


def patch_redis_channel() -> None:
    _raise_connection_error_when_closed()
    _reuse_clients()


def _raise_connection_error_when_closed() -> None:
    original = transport.Channel._connparams
    if getattr(original, "opie_patched", False):
        return

    def _connparams(self: Any, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection was closed")
        return original(self, asynchronous=asynchronous)

    _connparams.opie_patched = True  # type: ignore[attr-defined]
    transport.Channel._connparams = _connparams


def _reuse_clients() -> None:
    if getattr(transport.Channel.conn_or_acquire, "opie_patched", False):
        return

    @contextmanager
    def conn_or_acquire(self: Any, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool
        shared = self.__dict__.get("_opie_client")
        if shared is None or shared.connection_pool is not pool:
            shared = self._create_client()
            self.__dict__["_opie_client"] = shared
        yield shared

    conn_or_acquire.opie_patched = True  # type: ignore[attr-defined]
    transport.Channel.conn_or_acquire = conn_or_acquire
