"""One Redis subscriber per web process, shared by every client waiting on a job.

A client following a job (SSE, long-poll, `send-message` with `wait`) is a
coroutine holding a `Follower`, not a thread holding a Redis connection. The
process's `Hub` keeps **one** pub/sub connection: the first follower of a job
subscribes to its channel, the hub fans each message out to that job's
followers, and channels nobody follows any more are unsubscribed a little
later (so a client that reconnects at once finds its channel still there).

Redis is transport only: a message is a nudge, never the record. Every
`AGENTOS_EVENTS_RECHECK_SECONDS` the hub reads the status and event counter of
**all** the jobs its followers follow in one query, and nudges the followers
whose job moved on without a message reaching them (a lost publish, Redis
down). When the connection drops, the hub reconnects with backoff,
subscribes again to every followed channel and re-checks at once.
"""
from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import time
import weakref
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import redis
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

from apps.events.pubsub import CONTENT_DELTA, channel, redis_url
from apps.events.services import TERMINAL_TYPES
from apps.jobs.models import Job

logger = logging.getLogger(__name__)

TERMINAL = frozenset(str(status) for status in Job.TERMINAL)
# how long a new follower waits for Redis to confirm its channel before relying on re-checks
CONFIRM_SECONDS = 2.0
# a channel nobody follows is unsubscribed after this long
UNSUBSCRIBE_AFTER = 5.0
_RECONNECT_MAX = 5.0
# how the hub's connection shows in Redis's CLIENT LIST (then `-<pid>`): one per web process
CLIENT_NAME = "opie-events-hub"


def recheck_seconds() -> float:
    """How often the hub re-reads the database in case a publish was lost."""
    return float(settings.AGENTOS_EVENTS_RECHECK_SECONDS)


class Follower:
    """One waiting client's view of one job: the highest event number it has
    been told of (`seq`), whether the job has ended, whether the hub asks it
    to look for itself (`poked`: the re-check did not find the job, which a
    deleted job and a row this process cannot see yet look alike), and the
    reply's latest live text (a `content.delta` carries the whole text so far,
    so only the newest one matters)."""

    def __init__(self, public_id: str, *, deltas: bool) -> None:
        self.public_id = public_id
        self.channel = channel(public_id)
        self.seq = 0
        self.ended = False
        self.poked = False
        self.delta: str | None = None
        self._deltas = deltas  # a long-poll has no use for the live text: it is not woken by it
        self._changed = asyncio.Event()

    def _saw(self, *, seq: int = 0, ended: bool = False, delta: str | None = None, poke: bool = False) -> None:
        if poke:
            self.poked = True
            self._changed.set()
        if seq > self.seq:
            self.seq = seq
            self._changed.set()
        if ended and not self.ended:
            self.ended = True
            self._changed.set()
        if delta is not None and self._deltas:
            self.delta = delta
            self._changed.set()

    async def changed(self, timeout: float) -> bool:
        """Wait until something new arrives or `timeout` seconds pass; True if something did."""
        if not self._changed.is_set():
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, timeout))
            except asyncio.TimeoutError:
                return False
        self._changed.clear()
        return True

    def take_delta(self) -> str | None:
        delta, self.delta = self.delta, None
        return delta

    def take_poke(self) -> bool:
        poked, self.poked = self.poked, False
        return poked


def _job_states(public_ids: list[str]) -> dict[str, tuple[str, int]]:
    """(status, event counter) of each job that still exists: one query for every follower."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT public_id, status, event_seq FROM {Job._meta.db_table} WHERE public_id = ANY(%s)",
                       [public_ids])
        return {row[0]: (row[1], row[2]) for row in cursor.fetchall()}


class Hub:
    def __init__(self) -> None:
        self._followers: dict[str, set[Follower]] = {}
        self._subscribed: dict[str, asyncio.Future[None]] = {}  # channel -> confirmed once done
        self._idle_since: dict[str, float] = {}
        self._client: Any = None
        self._pubsub: Any = None
        self._live = False
        self._down = False  # the last attempt to connect failed: new followers do not wait for Redis
        self._tried = asyncio.Event()  # set once an attempt to connect has succeeded or failed
        self._leaving: set[str] = set()  # channels whose UNSUBSCRIBE is being sent
        self._left = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None
        self._wake_checker = asyncio.Event()
        self._check_now = False  # set when messages may have been lost (a dropped or new connection)

    # --- followers -------------------------------------------------------------------------------------
    @asynccontextmanager
    async def follow(self, *, public_id: str, deltas: bool = False) -> AsyncIterator[Follower]:
        """A follower of the job, whose channel Redis has confirmed (or, with Redis
        unreachable, one the re-check alone keeps up to date). A message
        published after this is entered reaches it. `deltas`: also hand it the
        reply's live text."""
        self._start()
        follower = Follower(public_id, deltas=deltas)
        self._followers.setdefault(follower.channel, set()).add(follower)
        self._idle_since.pop(follower.channel, None)
        self._wake_checker.set()  # the re-check schedule may have changed (a test, a setting)
        try:
            await self._confirmed(follower.channel)
            yield follower
        finally:
            followers = self._followers.get(follower.channel)
            if followers is not None:
                followers.discard(follower)
                if not followers:
                    del self._followers[follower.channel]
                    self._idle_since[follower.channel] = time.monotonic()

    async def _confirmed(self, name: str) -> None:
        if not self._live and not self._down:  # the first attempt to connect is under way: worth a short wait
            try:
                await asyncio.wait_for(self._tried.wait(), CONFIRM_SECONDS)
            except asyncio.TimeoutError:
                return
        while name in self._leaving:  # subscribe again only once the UNSUBSCRIBE has gone out
            self._left.clear()
            try:
                await asyncio.wait_for(self._left.wait(), CONFIRM_SECONDS)
            except asyncio.TimeoutError:
                logger.warning("%s: still unsubscribing; relying on database re-checks", name)
                return
        if not self._live:
            return
        future = self._subscribed.get(name)
        if future is None:
            future = self._subscribed[name] = asyncio.get_running_loop().create_future()
            try:
                await self._pubsub.subscribe(name)
            except (redis.RedisError, OSError) as exc:
                self._lost(exc)
                return
        try:
            await asyncio.wait_for(asyncio.shield(future), CONFIRM_SECONDS)
        except asyncio.TimeoutError:
            logger.warning("%s: no SUBSCRIBE confirmation; relying on database re-checks", name)

    # --- the Redis side --------------------------------------------------------------------------------
    def _start(self) -> None:
        # in a context of their own: not the first follower's request, which ends long before them
        loop = asyncio.get_running_loop()
        if self._reader is None or self._reader.done():
            self._reader = loop.create_task(self._read_forever(), name="opie-hub-reader",
                                            context=contextvars.Context())
        if self._checker is None or self._checker.done():
            self._checker = loop.create_task(self._check_forever(), name="opie-hub-checker",
                                             context=contextvars.Context())

    async def _connect(self) -> None:
        client = aioredis.Redis.from_url(redis_url(settings.REDIS_URL), socket_connect_timeout=1,
                                         health_check_interval=30,
                                         client_name=f"{CLIENT_NAME}-{os.getpid()}")
        self._client = client
        pubsub = client.pubsub()
        # a pub/sub connection exists once it subscribes: this channel is never published to
        await pubsub.subscribe("opie:hub")
        self._pubsub, self._live, self._down = pubsub, True, False
        self._tried.set()
        self._subscribed.clear()
        for name in list(self._followers):
            self._subscribed[name] = asyncio.get_running_loop().create_future()
        if self._followers:
            await pubsub.subscribe(*self._followers)

    def _lost(self, exc: BaseException) -> None:
        was_live = self._live
        if was_live or not self._down:
            logger.warning("events hub: Redis pub/sub unavailable (%s); followers rely on database re-checks", exc)
        self._live, self._down = False, True
        self._tried.set()
        for future in self._subscribed.values():
            if not future.done():
                future.set_result(None)
        self._subscribed.clear()
        if was_live:  # messages may have been lost with it (a failed reconnect loses nothing more)
            self._check_soon()

    def _check_soon(self) -> None:
        self._check_now = True
        self._wake_checker.set()

    async def _read_forever(self) -> None:
        backoff = 0.1
        while True:
            try:
                if not self._live:
                    reconnecting = self._down
                    await self._connect()
                    backoff = 0.1
                    if reconnecting:
                        self._check_soon()  # whatever was published while it was disconnected
                # a bounded wait, so a silent connection still gets redis-py's health-check PING
                message = await self._pubsub.get_message(timeout=5.0)
                if message is not None:
                    self._dispatch(message)
            except asyncio.CancelledError:
                await self._close()
                raise
            except Exception as exc:  # noqa: BLE001 (whatever broke, the reader must live on)
                self._lost(exc)
                await self._close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _RECONNECT_MAX)

    async def _close(self) -> None:
        pubsub, client = self._pubsub, self._client
        self._pubsub, self._client, self._live = None, None, False
        for closable in (pubsub, client):
            if closable is not None:
                try:
                    await closable.aclose()
                except (redis.RedisError, OSError):
                    pass

    def _dispatch(self, message: dict[str, Any]) -> None:
        name = message.get("channel")
        name = name.decode() if isinstance(name, bytes) else name
        kind = message.get("type")
        if kind == "subscribe":
            future = self._subscribed.get(name)
            if future is not None and not future.done():
                future.set_result(None)
            return
        if kind != "message":
            return
        followers = self._followers.get(name)
        if not followers:
            return
        try:
            payload = json.loads(message["data"])
        except (TypeError, ValueError):
            return
        if not isinstance(payload, dict):
            return
        if payload.get("type") == CONTENT_DELTA:
            if isinstance(payload.get("text"), str):
                for follower in followers:
                    follower._saw(delta=payload["text"])
            return
        seq = payload.get("seq")
        if isinstance(seq, int):
            ended = payload.get("type") in TERMINAL_TYPES
            for follower in followers:
                follower._saw(seq=seq, ended=ended)

    # --- the database re-check -------------------------------------------------------------------------
    async def _check_forever(self) -> None:
        last = time.monotonic()
        while True:
            wait = last + recheck_seconds() - time.monotonic()
            if wait > 0:
                self._wake_checker.clear()
                try:
                    await asyncio.wait_for(self._wake_checker.wait(), wait)
                except asyncio.TimeoutError:
                    pass
                # woken early: a new follower only reschedules (the period may have changed)
                if not self._check_now and time.monotonic() < last + recheck_seconds():
                    continue
            last, self._check_now = time.monotonic(), False
            try:
                await self._check()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is down, say: followers keep their state and try again
                logger.warning("events hub: re-check failed", exc_info=True)
            await self._unsubscribe_idle()

    async def _check(self) -> None:
        # one job per channel, and a channel's set of followers is never empty
        jobs = [(next(iter(followers)).public_id, list(followers)) for followers in self._followers.values()]
        if not jobs:
            return
        states = await sync_to_async(_job_states, thread_sensitive=False)([public_id for public_id, _ in jobs])
        for public_id, followers in jobs:
            state = states.get(public_id)
            for follower in followers:
                if state is None:
                    follower._saw(poke=True)
                else:
                    follower._saw(seq=state[1], ended=state[0] in TERMINAL)

    async def _unsubscribe_idle(self) -> None:
        cutoff = time.monotonic() - UNSUBSCRIBE_AFTER
        idle = [name for name, since in self._idle_since.items() if since <= cutoff and name not in self._followers]
        if not idle:
            return
        for name in idle:
            del self._idle_since[name]
            self._subscribed.pop(name, None)
        if not self._live:
            return
        self._leaving.update(idle)
        try:
            await self._pubsub.unsubscribe(*idle)
        except (redis.RedisError, OSError) as exc:
            self._lost(exc)
        finally:
            self._leaving.difference_update(idle)
            self._left.set()


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """The running event loop's hub (one per web process; asyncio objects belong to one loop)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = Hub()
    return found
