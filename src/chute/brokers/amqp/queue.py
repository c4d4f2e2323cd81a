"""Broker on RabbitMQ (`amqp://user:pass@host:port/vhost`, `amqps://…`; `?queue_type=quorum`), with pika.

RabbitMQ keeps the messages; the store the App binds it to (docs/brokers/rabbitmq.md) keeps what
RabbitMQ cannot: idempotency keys, the queue registry, QUEUED marks, counters (books.py). The broker's
parts: topology.py (what is declared), publish.py (a publish planned and judged, no I/O), send.py and
aio.py (its pika and aio-pika drivers), links.py and consumer.py (connections), leases.py (the
consuming side), dead.py (dead letters).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import quote, urlsplit, urlunsplit

import pika

from ...errors import ChuteError, InvalidURL
from ...results import ResultRecord
from ...topics import group_queue
from .. import redact_url
from ..base import AsyncQueue, DeadLetter, Delivery, Features, Outgoing, QueueStats
from ..shared import translated, url_options
from ..store import Store
from .books import Books
from .dead import DeadLetters
from .leases import Leases
from .links import Link, Pool
from .publish import REQUEST_TIMEOUT
from .send import Sender
from .topology import TOPICS, Topology, dead_queue
from .translate import translate

PIKA_DEFAULTS = {"socket_timeout": "2", "stack_timeout": "4", "blocked_connection_timeout": str(REQUEST_TIMEOUT),
                 "connection_attempts": "1", "heartbeat": "30"}


def queue_type(text: str) -> str:
    """The `?queue_type=` option (blank: the default)."""
    if text not in ("", "classic", "quorum"):
        raise ValueError("queue_type must be 'classic' or 'quorum'")
    return text or "classic"


class AMQPBroker:
    """Durable queues on RabbitMQ, shared by every machine that reaches it.

    Guarantees: at-least-once. Messages are persistent, queues durable (classic, or quorum with
    `?queue_type=quorum`); a publish returns only when RabbitMQ confirmed every message of it
    (publisher confirms, one wait per batch), else raises BrokerUnavailable within 5 s. Consumers
    ack manually after the outcome is recorded; a worker holds at most its prefetch under lease and
    its connection at most basic.qos = 2 x that unacked per queue. A worker that dies (SIGKILL, a
    lost connection) loses its connection, and RabbitMQ requeues every message it held. Leases are
    kept by the consuming process: one that runs out is requeued by it (basic.nack) and its claim
    is void, so a stale ack, nack or extend does nothing and says so. Delays never hold a message
    anywhere but in RabbitMQ: a delayed message passes through per-queue TTL queues of 10 ms x 2^k
    (one per set bit of its delay) and dead-letters into its queue when due, 2-20 ms late, never
    early. Priorities 0-9 via x-max-priority (classic queues). Dead letters go to the queue
    `chute.dead.<queue>` with their reason; the work queue's dead-letter exchange sends what
    RabbitMQ itself rejects there too.

    Non-guarantees: a batch that fails part-way may be partly stored (confirms are per message);
    retries, dead-lettering, replay and the early-arrival hop are "publish the copy, then ack the
    original", so a crash between the two keeps a message twice; max_length is checked by the
    producer before publishing (a read, then the publish: concurrent producers may overshoot it);
    priorities order what RabbitMQ delivers and each consumer's window, not messages another worker
    prefetched; quorum queues (before RabbitMQ 4.0) ignore priorities; a task cannot hold its
    message longer than the server's consumer_timeout (30 minutes by default) unless that is
    raised; other processes' shares of `ready`/`in_flight` come from their heartbeats (up to 2 s
    old); status is `unknown` until a worker takes a task.

    Round trips: publish 1 wait per batch (plus once per queue and process: its declarations);
    fetch 0 while the prefetch buffer holds messages, else (timeout 0, and the server may still owe
    some) a passive declare per queue + a basic.qos so that nothing owed is still on its way; ack,
    release and lease expiry 0 (frames; acks covering every lower tag go as one multiple ack);
    extend 0 (leases are local); nack and dead_letter 1 (a confirmed publish, then an ack frame).
    """

    # QUEUED marks go to the bound store with each publish; async batches overlap (a confirm takes milliseconds)
    features = Features(marks_queued=True, publish_overlap=4, socket_io=True)

    def __init__(self, url: str, params: pika.URLParameters, *, queue_type: str = "classic") -> None:
        self.url = redact_url(url)
        self.queue_type = queue_type
        self._params = params
        self._books = Books(self.url)
        self._pool = Pool(params)
        self._topology = Topology(queue_type, self._books)
        self._sender = Sender(self._pool, self._topology, self._books, self.url, self._held, self._sending)
        self._leases = Leases(params, self._books, self._sender)
        self._dead = DeadLetters(self._sender)
        self._aio: _LazyAsync | None = None

    @classmethod
    def from_url(cls, url: str) -> AMQPBroker:
        """Open `amqp://user:pass@host:port/vhost` (or amqps://) with `?queue_type=classic|quorum`;
        pika's own URL options (heartbeat, socket_timeout, ssl_options, …) pass through."""
        ours, theirs = url_options(url, {"queue_type": queue_type}, shown=redact_url(url), passthrough=True)
        options = PIKA_DEFAULTS | {k: v for k, v in theirs.items() if v}
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in options.items())
        try:
            params = pika.URLParameters(urlunsplit(urlsplit(url)._replace(query=query)))
        except (ValueError, TypeError) as exc:
            raise InvalidURL(f"{redact_url(url)!r}: {exc}") from None
        return cls(url, params, queue_type=ours.get("queue_type", "classic"))

    # -- the store it keeps its bookkeeping in ----------------------------------------------------
    def bind(self, store: Store) -> None:
        """Keep this queue's bookkeeping in the App's store (idempotency claims, counters, the queue and
        delay registries, the QUEUED marks); unbound, it opens `open_store(url)`'s store when first needed."""
        self._books.bind(store)

    @property
    def _store(self) -> Store | None:
        return self._books.bound

    def work_queue_args(self, queue: str) -> dict[str, Any]:
        """The arguments chute declares a work queue with (a plain client must use the same)."""
        return self._topology.work_queue_args(queue)

    @contextmanager
    def _link(self) -> Iterator[Link]:
        """A pooled connection for one operation (benchmarks/amqp_delays.py uses it to clean up)."""
        with self._pool.link() as link:
            yield link

    # -- producing -----------------------------------------------------------------------------------
    @translated(translate)
    def publish(self, messages: Sequence[Outgoing]) -> list[str]:
        return self._sender.publish(messages)

    @translated(translate)
    def declare_group(self, group: str, patterns: Sequence[str]) -> None:
        queue = group_queue(group)
        with self._pool.link() as link:
            ch = link.admin()
            self._topology.declare_topics(ch)
            self._topology.declare_queue(ch, queue)
            for p in patterns:
                ch.queue_bind(queue, TOPICS, p)

    def _held(self) -> tuple[dict[str, int], dict[str, int]]:
        return self._leases.counts()

    def _sending(self) -> None:
        self._leases.unsync()

    # -- consuming -----------------------------------------------------------------------------------
    @translated(translate)
    def fetch(self, queues: Sequence[str], limit: int, lease: float, timeout: float) -> list[Delivery]:
        return self._leases.fetch(queues, limit, lease, timeout)

    @translated(translate)
    def ack(self, deliveries: Sequence[Delivery], results: Sequence[ResultRecord] = ()) -> int:
        if results:
            raise TypeError("RabbitMQ keeps no results: write them to the store, then ack")
        return self._leases.ack(deliveries)

    @translated(translate)
    def release(self, deliveries: Sequence[Delivery]) -> int:
        return self._leases.release(deliveries)

    @translated(translate)
    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        return self._leases.extend(deliveries, lease)

    @translated(translate)
    def nack(self, delivery: Delivery, body: bytes, retry_at: float) -> bool:
        return self._leases.nack(delivery, body, retry_at)

    @translated(translate)
    def dead_letter(self, delivery: Delivery, reason: str, body: bytes | None = None) -> bool:
        return self._leases.dead_letter(delivery, reason, body)

    def beat(self, worker_id: str) -> tuple[dict[str, int], dict[str, int]]:
        return self._leases.beat(worker_id)

    def stopped(self, worker_id: str) -> None:
        self._leases.stopped(worker_id)

    def local_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Messages this process holds per queue: handed out under a lease, and prefetched (waiting to
        be asked for: `ready` to the application, though RabbitMQ counts them as delivered)."""
        return self._leases.local_counts()

    # -- operating -----------------------------------------------------------------------------------
    @translated(translate)
    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Counts per queue; without `queues`, every known queue that holds anything (as SQLite lists)."""
        c = self._leases.current()
        if c is not None:
            c.service()  # leases that ran out go back first
        t = self._topology
        names = sorted(set(queues)) if queues is not None else t.queues()
        held, prefetched = self._leases.counts()
        out = []
        with self._pool.link() as link:
            for q in names:
                s = QueueStats(q, t.ready(link, q) + prefetched.get(q, 0), held.get(q, 0), t.delayed(link, q),
                               t.count(link, dead_queue(q)) or 0)
                if queues is not None or s.ready or s.in_flight or s.delayed or s.dead:
                    out.append(s)
        return out

    @translated(translate)
    def dead_letters(self, queue: str | None = None, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        return self._dead.letters(queue, limit, offset)

    @translated(translate)
    def replay(self, queue: str | None = None, ids: Sequence[str] | None = None) -> int:
        return self._dead.move(queue, ids, replay=True)

    @translated(translate)
    def purge_dead(self, queue: str | None = None, ids: Sequence[str] | None = None) -> int:
        return self._dead.move(queue, ids, replay=False)

    # -- asyncio: the same frames on aio-pika (aio.py) ------------------------------------------------
    @property
    def aio(self) -> AsyncQueue:
        """The asyncio side, made on first use (importing aio-pika takes ~0.1 s)."""
        if self._aio is None:
            self._aio = _LazyAsync(self._sender, self._params)
        return self._aio

    def close(self) -> None:
        self._leases.close()
        if self._aio is not None:
            self._aio.close()
        self._pool.close()
        self._books.close()


class _LazyAsync:
    """The asyncio side, its aio-pika half made off the loop on the first publish."""

    def __init__(self, sender: Sender, params: pika.URLParameters) -> None:
        self._sender, self._params = sender, params
        self._made: Any = None

    def _make(self) -> Any:
        try:
            from .aio import AsyncAMQP
        except ImportError as exc:
            raise ChuteError(f"the asyncio side of the RabbitMQ broker needs aio-pika ({exc}): "
                             "pip install 'chute[amqp]'") from None
        return AsyncAMQP(self._sender, self._params)

    async def publish(self, messages: Sequence[Outgoing]) -> list[str]:
        if self._made is None:
            made = await asyncio.to_thread(self._make)  # not on the loop: the import is slow
            if self._made is None:  # a concurrent first call may have made one already
                self._made = made
        return cast(list[str], await self._made.publish(messages))

    async def aclose(self) -> None:
        """Close the running event loop's connection (the sync ones stay open)."""
        if self._made is not None:
            await self._made.aclose()

    def close(self) -> None:
        if self._made is not None:
            self._made.close()
