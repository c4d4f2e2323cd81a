"""The Redis broker's asyncio side: publish and wait on `redis.asyncio`, never blocking the loop.

It serves one RedisBroker and speaks exactly its protocol: the same Lua scripts (scripts.py), the
same keys (keys.py), the same calls and replies (plan.py), so a message published here is
indistinguishable from one published by `RedisBroker.publish`, and a result waited for here wakes
on the same notification as `RedisBroker.wait`. Round trips: publish 1 (plus 1 to read
subscriptions when a batch holds an event, and 1 the first time this process names a queue); wait 1
+ one BLPOP per second waited.

redis.asyncio connections belong to the event loop that opened them, so each loop gets a client
of its own, closed by `aclose()` or, at the latest, when the loop shuts down (asyncio.run, uvicorn
and aiohttp all finalise async generators then, which is the hook used here).
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

from ...results import ResultRecord
from ..base import Outgoing
from ..shared import fan_out, unrouted_key
from . import scripts as lua
from .connect import RETRIES, backoff, guarded, pool_options
from .keys import Keys
from .plan import (
    BLOCK_CHUNK,
    RECORD_FIELDS,
    decode_record,
    is_lone_enqueue,
    ms,
    publish_call,
    publish_reply,
    record,
    subscriptions,
)

try:
    import hiredis
except ImportError:  # pragma: no cover - the redis extra installs it
    hiredis = None  # type: ignore[assignment]


class _HiredisPacking:
    """Packs commands with hiredis, as sync redis-py does when hiredis is installed. redis.asyncio packs
    in Python: ~1.3 ms of the loop's time for one publish of 50 messages (474 arguments), against
    ~0.15 ms here."""

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]
        if (isinstance(name, str) and " " in name) or (isinstance(name, bytes) and b" " in name):
            args = (*name.split(), *args[1:])  # "SCRIPT LOAD": the server wants two arguments
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # hiredis takes bytes, str, int and float; redis-py also takes buffers
            args = tuple(bytes(a) if isinstance(a, (bytearray, memoryview)) else a for a in args)
            try:
                return [hiredis.pack_command(args)]
            except TypeError as exc:
                raise redis.DataError(str(exc)) from None


class _LoopClient:
    """A redis.asyncio client and its scripts, bound to one event loop."""

    def __init__(self, dsn: str) -> None:
        pool = aioredis.ConnectionPool.from_url(dsn, **pool_options(), retry=Retry(
            backoff(), RETRIES, supported_errors=(redis.ConnectionError,)))
        if HIREDIS_AVAILABLE:  # whichever class the URL chose (TCP, TLS, Unix socket), with hiredis's packer
            pool.connection_class = type(f"Hiredis{pool.connection_class.__name__}",
                                         (_HiredisPacking, pool.connection_class), {})
        self.redis = aioredis.Redis(connection_pool=pool)
        self.enqueue = self.redis.register_script(lua.ENQUEUE)
        self.publish = self.redis.register_script(lua.PUBLISH)
        self.queued_marks = self.redis.register_script(lua.QUEUED_MARKS)
        self.keeper: AsyncIterator[None] | None = None


class AsyncRedis:
    """`publish`, `queued`, `get` and `wait` of one RedisBroker, for coroutines."""

    def __init__(self, url: str, dsn: str, keys: Keys, known: set[str]) -> None:
        self.url = url  # masked, for errors
        self._dsn = dsn  # with its password, without chute's own options
        self._keys = keys
        self._known = known  # the queues this process has registered, shared with the sync side
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = \
            weakref.WeakKeyDictionary()

    async def _client(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = _LoopClient(self._dsn)
            client.keeper = self._keep(loop, client)
            await anext(client.keeper)  # registered with the loop now: finalised at its shutdown
        return client

    async def _keep(self, loop: asyncio.AbstractEventLoop, client: _LoopClient) -> AsyncIterator[None]:
        try:
            yield
        finally:
            self._clients.pop(loop, None)
            await client.redis.aclose(close_connection_pool=True)

    async def aclose(self) -> None:
        """Close the running loop's client (other loops close theirs when they shut down)."""
        client = self._clients.get(asyncio.get_running_loop())
        if client is not None and client.keeper is not None:
            await cast(Any, client.keeper).aclose()

    def close(self) -> None:
        """From sync code: ask every loop still running elsewhere to close its client."""
        for loop, client in list(self._clients.items()):
            if client.keeper is not None and loop.is_running() and not loop.is_closed():
                asyncio.run_coroutine_threadsafe(cast(Any, client.keeper).aclose(), loop)

    # -- producing -----------------------------------------------------------------------------
    @guarded
    async def publish(self, messages: Sequence[Outgoing]) -> list[str]:
        if not messages:
            return []
        c, k = await self._client(), self._keys
        if is_lone_enqueue(self._known, messages):  # the one-by-one fast path, as in RedisQueue.publish
            m = messages[0]
            await c.enqueue([k.stream(m.queue, m.priority), k.record(m.id)], [m.id, m.body, m.queue])
            return [m.id]
        plan: list[int | str] = list(range(len(messages)))
        if any(m.topic is not None for m in messages):
            subs = cast(list[bytes], await c.redis.hkeys(k.subs))
            messages, plan, unrouted = fan_out(messages, subscriptions(subs))
            for topic in unrouted:
                await c.redis.hincrby(k.meta, unrouted_key(topic), 1)
            if not messages:
                return [str(x) for x in plan]
        new = {m.queue for m in messages} - self._known
        if new:
            await c.redis.sadd(k.queues, *sorted(new))
            self._known |= new
        call = publish_call(k, messages)
        return publish_reply(await c.publish(call.keys, call.args), call, plan)

    # -- results -------------------------------------------------------------------------------
    @guarded
    async def queued(self, records: Sequence[ResultRecord]) -> None:
        """QUEUED marks where the tasks have no record (RedisStore.queued), for a broker that keeps its
        messages elsewhere (RabbitMQ) and its results here."""
        if records:
            c = await self._client()
            await c.queued_marks([self._keys.record(r.task_id) for r in records], [r.queue for r in records])

    @guarded
    async def get(self, task_id: str) -> ResultRecord | None:
        c = await self._client()
        return record(task_id, await c.redis.hmget(self._keys.record(task_id), RECORD_FIELDS))

    @guarded
    async def wait(self, task_id: str, timeout: float | None) -> ResultRecord | None:
        """Sleep in Redis (BLPOP on a wake-up list of our own) until the task finishes or `timeout`."""
        c, k = await self._client(), self._keys
        deadline = None if timeout is None else time.monotonic() + timeout
        key, waiters, mine = k.record(task_id), k.waiters(task_id), k.wake(task_id, os.urandom(6).hex())
        while True:
            remaining = BLOCK_CHUNK if deadline is None else deadline - time.monotonic()
            pipe = c.redis.pipeline(transaction=False)  # register first, then read: a later store wakes us
            pipe.sadd(waiters, mine)
            pipe.pexpire(waiters, ms(BLOCK_CHUNK + 1))
            pipe.hmget(key, RECORD_FIELDS)
            rec = record(task_id, (await pipe.execute())[2])
            if (rec is not None and rec.state.finished) or remaining <= 0:
                return rec
            got = await cast(Any, c.redis.blpop([mine], timeout=min(remaining, BLOCK_CHUNK)))
            if got is not None:
                return decode_record(cast(bytes, got[1]))
