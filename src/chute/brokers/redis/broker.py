"""RedisBroker: the Queue (queue.py) and the Store (store.py) on one Redis server, as one object."""

from __future__ import annotations

from typing import Any, cast

import redis

from .. import redact_url
from ..base import Features
from ..pairing import AsyncBroker
from ..shared import KeepsOwnBooks
from .connect import DEFAULT_PREFIX, open_pool, parse
from .keys import Keys
from .plan import EnqueuePacker
from .queue import RedisQueue
from .server import Server
from .store import RedisStore


class RedisBroker(KeepsOwnBooks, RedisQueue, RedisStore):
    """Broker and result store on Redis >= 6.2: Streams with a consumer group
    (`redis://host:port/db?prefix=chute`), shared by every machine that reaches the server.

    Guarantees: at-least-once delivery to every machine that reaches the server; each multi-step
    operation is one Lua script (scripts.py), so several workers promoting delays or reclaiming
    leases at once never lose or double a message; a claim is fenced by a token, so a worker whose
    lease ran out cannot ack, nack, extend or dead-letter what another worker now holds. Durability
    is Redis's: `appendonly yes` + `appendfsync always` loses nothing acknowledged; with `everysec` a
    server crash may lose the last second (docs/brokers/redis.md). Non-guarantees: leases use the
    server's clock, ETAs the producer's; a released or retried message goes to the back of its
    priority band; multi-queue fetches and batches need a standalone server (not Redis Cluster).

    Design: one stream per (queue, priority band 0..9), read through the group `chute` (keys.py). The
    lease is a sorted set (entry -> expiry) beside a hash (entry -> claim token), not the PEL idle
    time, because each fetch may ask for its own lease; expired leases are re-claimed with XCLAIM
    (which counts the delivery) by whichever fetch runs next. Delays wait in a sorted set and are
    promoted by the fetch script. Round trips: `delay()` 1; a batch publish 1 (one script for every
    queue in it); fetch 1 per batch (promote, reclaim, XREADGROUP highest band first), plus one
    `XREAD BLOCK` that sleeps in Redis when idle; ack with results 1 per batch; extend 1 per
    heartbeat; `wait()` 1 + a BLPOP. The hottest of them go over lean sockets (lean.py).
    """

    # ack(deliveries, results) writes both in one pipeline; each Delivery says whether its task was
    # cancelled; `publish` marks QUEUED and `started` marks STARTED in their own scripts
    features = Features(acks_with_results=True, cancellation_at_fetch=True, marks_started=True, socket_io=True)

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX, url: str = "redis://") -> None:
        self.url = redact_url(url)
        self.prefix = prefix
        self.keys = Keys(prefix)
        self._server = Server(client, self.url)
        self._known: set[str] = set()
        self._enqueue_command = EnqueuePacker(self.keys, self._server.enqueue.sha).pack
        self._dsn = url  # with its password: the asyncio side opens its own connections
        self._aio: Any = None  # aio.AsyncRedis, made on first use

    @classmethod
    def from_url(cls, url: str) -> RedisBroker:
        """Open `redis://[:password@]host:port/db[?prefix=NAME]` (or rediss:// for TLS)."""
        shown = redact_url(url)
        prefix, dsn = parse(url, shown)
        return cls(redis.Redis(connection_pool=open_pool(dsn, shown)), prefix=prefix, url=url)

    @property
    def aio(self) -> AsyncBroker:
        """The same scripts on redis.asyncio: the queue's and the store's asyncio side."""
        if self._aio is None:
            from .aio import AsyncRedis  # redis.asyncio is imported only by processes that use it

            self._aio = AsyncRedis(self.url, parse(self._dsn, self.url)[1], self.keys, self._known)
        return cast(AsyncBroker, self._aio)

    def close(self) -> None:
        if self._aio is not None:
            self._aio.close()
        self._server.close()
