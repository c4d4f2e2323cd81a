"""Broker on RabbitMQ (`amqp://user:pass@host:port/vhost`, `amqps://…`; `?queue_type=quorum`), with pika.

RabbitMQ keeps the messages; the App's result store (docs/brokers/rabbitmq.md) keeps what
RabbitMQ cannot: results, idempotency keys, the queue registry, worker heartbeats and events.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import logging
import os
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar, cast
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import pika
import pika.exceptions

from ..errors import BrokerError, BrokerUnavailable, ChuteError, InvalidURL, QueueFull
from ..results import ResultRecord
from ..states import State
from ..topics import GROUP_PREFIX, group_queue
from . import redact_url
from .amqp_links import CONNECTION_ERRORS, REQUEST_TIMEOUT, Consumer, Held, Link, Message, Pool
from .base import AsyncQueue, DeadLetter, Delivery, Features, Outgoing, QueueStats
from .shared import QUEUED_TTL, idempotency_slot, queued_marks, unrouted_key
from .store import Store

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger("chute.amqp")

UNIT = 0.01  # seconds: the grain of delays
LEVELS = 24  # delay levels of UNIT * 2**k seconds: one pass through them waits up to ~46 hours
TOPICS = "chute.topics"
DELAY_EXCHANGE = "chute.delay.{}"  # one topic exchange per level, then chute.delay.due
DUE = "chute.delay.due"
H_ETA, H_TOPIC, H_REASON, H_DEAD_AT, H_QUEUE = "x-chute-eta", "x-chute-topic", "x-chute-reason", "x-chute-dead-at", \
    "x-chute-queue"
H_DELIVERIES = "x-chute-deliveries"  # on a copy given back by a worker: the deliveries it had had that count
QUEUES_KEY, DELAYED_KEY = "chute.amqp.queues", "chute.amqp.delayed"  # registries in the result store's meta
PERSISTENT = 2


def dead_queue(queue: str) -> str:
    return f"chute.dead.{queue}"


def delay_queue(queue: str, level: int) -> str:
    return f"chute.delay.{queue}.{level}"


def _token(queue: str) -> str:
    """The routing-key word that names a queue in the delay exchanges (queue names may hold dots)."""
    return hashlib.sha1(queue.encode()).hexdigest()[:16]


def _pattern(level: int, bit: str, last: str) -> str:
    """A binding key on delay exchange `level`: bit `level` of the delay (written high bit first) is `bit`."""
    words = ["*"] * LEVELS
    words[LEVELS - 1 - level] = bit
    return ".".join([*words, last])


def _units(delay: float) -> int:
    """A delay in UNITs, rounded up (never early), at most one pass through every level."""
    return min(max(1, int(-(-delay // UNIT))), (1 << LEVELS) - 1)


def _level(delay: float) -> int:
    """The highest delay level a message of this delay passes through."""
    return _units(delay).bit_length() - 1


def _guarded(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn pika's errors into chute's: BrokerUnavailable when the server cannot be reached."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except CONNECTION_ERRORS as exc:
            url = getattr(args[0], "url", "amqp")
            raise BrokerUnavailable(f"RabbitMQ at {url} is unreachable ({type(exc).__name__}: {exc}); "
                                    "nothing was confirmed, try again when it is back") from None
        except pika.exceptions.ChannelClosedByBroker as exc:
            url = getattr(args[0], "url", "amqp")
            raise BrokerError(f"RabbitMQ at {url} refused: {exc.reply_code} {exc.reply_text}") from None
        except pika.exceptions.AMQPError as exc:
            url = getattr(args[0], "url", "amqp")
            raise BrokerError(f"RabbitMQ at {url}: {type(exc).__name__}: {exc}") from None

    return call


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
        self._vhost = params.virtual_host
        self._pool = Pool(params)
        self._consumer: Consumer | None = None
        self._pid = os.getpid()
        self._declared: set[str] = set()  # queues (and "topics") declared by this process
        self._levels: dict[str, int] = {}  # queue -> highest delay level declared by this process
        self._exchange_level = -1
        self._registered: dict[tuple[str, str], int] = {}
        self._seen: dict[str, int] = {}  # message id -> deliveries handed out by this process
        self._store: Store | None = None
        self._owns_store = False
        self._my_workers: set[str] = set()
        self._aio: Any = None  # amqp_async.AsyncAMQP, made on the first async publish

    @classmethod
    def from_url(cls, url: str) -> AMQPBroker:
        """Open `amqp://user:pass@host:port/vhost` (or amqps://) with `?queue_type=classic|quorum`;
        pika's own URL options (heartbeat, socket_timeout, ssl_options, …) pass through."""
        parts = urlsplit(url)
        options = dict(parse_qsl(parts.query))
        queue_type = options.pop("queue_type", "classic")
        if queue_type not in ("classic", "quorum"):
            raise InvalidURL(f"{redact_url(url)!r}: queue_type must be 'classic' or 'quorum', not {queue_type!r}")
        options.setdefault("socket_timeout", "2")
        options.setdefault("stack_timeout", "4")
        options.setdefault("blocked_connection_timeout", str(REQUEST_TIMEOUT))
        options.setdefault("connection_attempts", "1")
        options.setdefault("heartbeat", "30")
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in options.items())
        try:
            params = pika.URLParameters(urlunsplit(parts._replace(query=query)))
        except (ValueError, TypeError) as exc:
            raise InvalidURL(f"{redact_url(url)!r}: {exc}") from None
        return cls(url, params, queue_type=queue_type)

    # -- the result store, where RabbitMQ's gaps are kept ---------------------------------------
    def default_results_url(self) -> str:
        """$CHUTE_RESULTS_URL, else a SQLite file per user, server and vhost (one machine)."""
        from . import default_store_url

        return default_store_url(self.url)

    def bind(self, store: Store) -> None:
        """Keep this queue's bookkeeping in the App's store (idempotency claims, counters, the queue and
        delay registries, the QUEUED marks); unbound, it opens `default_results_url()` when first needed."""
        if self._owns_store and self._store is not None and self._store is not store:
            self._store.close()
        self._store, self._owns_store = store, False

    def _results(self) -> Store:
        if self._store is None:
            from . import open_broker

            url = self.default_results_url()
            store = open_broker(url)
            if not isinstance(store, Store):
                raise InvalidURL(f"{redact_url(url)!r} (CHUTE_RESULTS_URL) cannot store results")
            self._store, self._owns_store = store, True
        return self._store

    # -- connections ---------------------------------------------------------------------------
    @contextmanager
    def _link(self) -> Iterator[Link]:
        """A pooled connection for one operation; a broken one is dropped, not returned."""
        link = self._pool.take()
        try:
            yield link
        except BaseException:
            link.close()
            raise
        self._pool.give(link)

    def _consuming(self) -> Consumer:
        if self._consumer is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._consumer = Consumer(self._params, lambda ch, q: self._declare_queue(ch, q, force=True), self.url)
            self._closer = weakref.finalize(self, self._consumer.close)  # at interpreter exit too
        return self._consumer

    # -- topology (docs/brokers/rabbitmq.md) ---------------------------------------------------
    def _queue_args(self, dead_letter_to: str | None) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.queue_type == "quorum":
            args["x-queue-type"] = "quorum"
        if dead_letter_to is not None:
            args["x-dead-letter-exchange"] = ""
            args["x-dead-letter-routing-key"] = dead_letter_to
            if self.queue_type == "quorum":  # at-least-once dead-lettering needs reject-publish overflow
                args["x-dead-letter-strategy"] = "at-least-once"
                args["x-overflow"] = "reject-publish"
        return args

    def work_queue_args(self, queue: str) -> dict[str, Any]:
        """The arguments chute declares a work queue with (a plain client must use the same)."""
        args = self._queue_args(dead_queue(queue))
        if self.queue_type == "classic":
            args["x-max-priority"] = 9
        return args

    def _declare_queue(self, ch: Any, queue: str, force: bool = False) -> None:
        """Declare a work queue and its dead-letter queue (idempotent; once per process unless forced)."""
        if queue in self._declared and not force:
            return
        try:
            ch.queue_declare(dead_queue(queue), durable=True, arguments=self._queue_args(None))
            ch.queue_declare(queue, durable=True, arguments=self.work_queue_args(queue))
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 406:
                raise BrokerError(f"RabbitMQ queue {queue!r} exists with other arguments ({exc.reply_text}); "
                                  f"chute declares it durable with {self.work_queue_args(queue)}: delete it, or "
                                  "use the matching ?queue_type=") from None
            raise
        self._declared.add(queue)
        self._register(QUEUES_KEY, queue)

    def _declare_delays(self, ch: Any, queue: str, level: int) -> None:
        """The delay exchanges and `queue`'s TTL queues for levels 0..`level` (docs/brokers/rabbitmq.md),
        pipelined (nowait) and then checked with one round trip; a later, longer delay adds levels."""
        have = self._levels.get(queue, -1)
        if have >= level:
            return
        self._declare_queue(ch, queue)
        impl, token = ch._impl, _token(queue)
        if self._exchange_level < 0:
            impl.exchange_declare(DUE, "topic", durable=True)
        for k in range(self._exchange_level + 1, level + 1):
            impl.exchange_declare(DELAY_EXCHANGE.format(k), "topic", durable=True)
            impl.exchange_bind(DELAY_EXCHANGE.format(k - 1) if k else DUE, DELAY_EXCHANGE.format(k),
                               _pattern(k, "0", "*"))
        for k in range(have + 1, level + 1):
            args = self._queue_args(None)
            args["x-message-ttl"] = int(round(UNIT * 1000)) << k
            if k:
                args["x-dead-letter-exchange"] = DELAY_EXCHANGE.format(k - 1)
            else:
                args.update({"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue})
            if self.queue_type == "quorum":
                args.update({"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
            impl.queue_declare(delay_queue(queue, k), durable=True, arguments=args)
            impl.queue_bind(delay_queue(queue, k), DELAY_EXCHANGE.format(k), _pattern(k, "1", token))
        if have < 0:
            impl.queue_bind(queue, DUE, "#." + token)
        ch.queue_declare(delay_queue(queue, level), passive=True)  # one wait: any refusal above surfaces here
        self._exchange_level = max(self._exchange_level, level)
        self._levels[queue] = level
        self._register(DELAYED_KEY, queue, level)

    def _declare_topics(self, ch: Any) -> None:
        if "topics" not in self._declared:
            ch.exchange_declare(TOPICS, "topic", durable=True)
            self._declared.add("topics")

    def _register(self, key: str, name: str, level: int = 0) -> None:
        """Add a name (with a level: delays) to a registry in the store's meta, since AMQP cannot list
        queues; read back to merge with a concurrent writer."""
        if self._registered.get((key, name), -1) >= level:
            return
        store = self._results()
        for _ in range(5):
            names = _registry(store.get_meta(key))
            if names.get(name, -1) >= level:
                break
            names[name] = level
            store.set_meta(key, "\n".join(f"{n}\t{v}" for n, v in sorted(names.items())))
        self._registered[(key, name)] = level

    # -- producing -----------------------------------------------------------------------------
    @_guarded
    def publish(self, messages: Sequence[Outgoing]) -> list[str]:
        ids, todo, drops = self._before_send(messages)
        if todo:
            self._send([self._frame(m, time.time()) for m in todo])
            self._after_send(drops)
        return ids

    @_guarded
    def _before_send(self, messages: Sequence[Outgoing]) -> tuple[list[str], list[Outgoing], dict[str, int]]:
        """What a publish does before its frames go out: claim idempotency keys, declare what these
        messages need, check max_length, write the QUEUED marks. Returns the id of each message, the
        messages still to send and the queues to trim afterwards (on_full="drop_oldest", their limits)."""
        ids: list[str] = []
        todo: list[Outgoing] = []
        for m in messages:
            held = self._claim_key(m) if m.idempotency_key is not None and m.topic is None else None
            ids.append(held or m.id)
            if held is None:
                todo.append(m)
        if not todo:
            return ids, [], {}
        limits = {m.queue: (m.max_length, m.on_full) for m in todo if m.max_length is not None and m.topic is None}
        with self._link() as link:
            self._prepare(link, todo)
            for queue, (limit, on_full) in limits.items():
                if on_full != "drop_oldest":
                    self._check_room(link, queue, limit or 0, sum(1 for m in todo if m.queue == queue))
        self._mark_queued([m for m in todo if m.topic is None])
        return ids, todo, {q: limit or 0 for q, (limit, on_full) in limits.items() if on_full == "drop_oldest"}

    @_guarded
    def _after_send(self, drops: dict[str, int]) -> None:
        if drops:
            with self._link() as link:
                for queue, limit in drops.items():
                    self._drop_oldest(link, queue, limit)

    def _is_plain(self, messages: Sequence[Outgoing]) -> bool:
        """True if publishing these needs nothing but their QUEUED marks and frames: no idempotency key,
        no max_length, every queue, delay level and exchange already declared by this process."""
        now = time.time()
        return self._store is not None and not any(
            m.idempotency_key is not None or m.max_length is not None or self._undeclared(m, now) for m in messages)

    def _undeclared(self, m: Outgoing, now: float) -> Callable[[Any], None] | None:
        """What `m` needs declared that this process has not declared yet (a call taking a channel), or None."""
        if m.topic is not None:
            return None if "topics" in self._declared else self._declare_topics
        if m.eta is not None and m.eta > now:
            level = _level(m.eta - now)
            if self._levels.get(m.queue, -1) >= level:
                return None
            return lambda ch: self._declare_delays(ch, m.queue, level)
        return None if m.queue in self._declared else lambda ch: self._declare_queue(ch, m.queue)

    def _mark_queued(self, messages: Sequence[Outgoing]) -> None:
        """QUEUED marks in the result store for tasks without a record, written before the messages
        exist (so no worker's STARTED can come first): RabbitMQ cannot answer for a task it holds, as
        SQLite and Redis do. One batch write; a publish that then fails leaves marks for a day."""
        if messages:
            self._results().queued(queued_marks(messages))

    def _prepare(self, link: Link, messages: Sequence[Outgoing]) -> None:
        """Declare, once per process, every queue, delay level or exchange these messages need."""
        ch = None
        now = time.time()
        for m in messages:
            declare = self._undeclared(m, now)
            if declare is not None:
                ch = ch or link.admin()
                declare(ch)

    def _frame(self, m: Outgoing, now: float, headers: dict[str, Any] | None = None) -> tuple[str, str, bytes, Any]:
        """(exchange, routing key, body, properties) for one message: straight to its queue, into the
        delay chain, or to the topic exchange."""
        headers = dict(headers or {})
        exchange, key = "", m.queue
        if m.topic is not None:
            exchange, key = TOPICS, m.topic
            headers[H_TOPIC] = m.topic
        elif m.eta is not None and m.eta > now:
            units = _units(m.eta - now)
            exchange = DELAY_EXCHANGE.format(units.bit_length() - 1)
            key = ".".join("1" if units >> (LEVELS - 1 - i) & 1 else "0" for i in range(LEVELS)) + "." + \
                _token(m.queue)
            headers[H_ETA] = int(m.eta * 1000)
        props = pika.BasicProperties(delivery_mode=PERSISTENT, message_id=m.id,
                                     priority=min(9, max(0, int(m.priority))), headers=headers or None)
        return exchange, key, m.body, props

    def _send(self, frames: list[tuple[str, str, bytes, Any]]) -> None:
        """Publish and wait for every confirm; on a broken connection, resend what was not confirmed
        on a new one until the deadline (a message may then be stored twice, never dropped)."""
        if self._consumer is not None:
            self._consumer.unsynced = True  # a fetch right after must see these arrive
        deadline = time.monotonic() + REQUEST_TIMEOUT
        pause = 0.05
        while True:
            try:
                with self._link() as link:
                    nacked, returned = link.publish(frames, max(0.1, deadline - time.monotonic()))
                break
            except CONNECTION_ERRORS as exc:
                if time.monotonic() + pause >= deadline:
                    raise BrokerUnavailable(f"RabbitMQ at {self.url} is unreachable ({type(exc).__name__}: {exc}); "
                                            f"{len(frames)} message(s) not confirmed (some may have been stored)"
                                            ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
        self._confirmed(len(frames), len(nacked), [(props.headers, props.message_id) for props in returned])

    def _confirmed(self, sent: int, nacked: int, returned: Sequence[tuple[dict[str, Any] | None, Any]]) -> None:
        """Judge a confirmed publish: count events no group wanted; raise for a returned task message
        (its queue was deleted) or for messages RabbitMQ refused. `returned` holds (headers, message id)."""
        for headers, message_id in returned:  # unroutable: an event no group wants, or a queue deleted
            topic = (headers or {}).get(H_TOPIC)
            if topic is not None:
                self._results().add_meta(unrouted_key(_text(topic)), 1)
            else:
                self._declared.clear()  # declare anew on the next publish
                self._levels.clear()
                raise BrokerError(f"RabbitMQ returned message {message_id} as unroutable: its queue was "
                                  "deleted while this process used it; publish again to declare it anew")
        if nacked:
            raise QueueFull(f"RabbitMQ refused {nacked} of {sent} message(s) (basic.nack: a "
                            "max-length policy with overflow=reject-publish, or a server error)")

    def _claim_key(self, m: Outgoing) -> str | None:
        """None if `m` claimed its idempotency key now; else the id of the message that holds it."""
        store = self._results()
        assert m.idempotency_key is not None
        name = f"chute.idempotency:{idempotency_slot(m.queue, m.idempotency_key)}"
        if store.acquire_lease(name, m.id, max(m.idempotency_window, 0.001)):
            store.set_meta(name, f"{m.id} {time.time() + m.idempotency_window}")
            return None
        deadline = time.monotonic() + 1.0
        while True:  # the holder writes its id right after taking the key
            held = (store.get_meta(name) or "").split(" ")
            if len(held) == 2 and float(held[1]) > time.time() or time.monotonic() > deadline:
                return held[0] or m.id
            time.sleep(0.005)

    def _check_room(self, link: Link, queue: str, limit: int, adding: int) -> None:
        waiting = self._waiting(link, queue)
        if waiting + adding > limit:
            raise QueueFull(f"queue {queue!r} is full: {waiting} waiting, limit {limit} (on_full='reject'); "
                            "nothing was enqueued")

    def _drop_oldest(self, link: Link, queue: str, limit: int) -> None:
        ch = link.admin()
        excess = self._waiting(link, queue) - limit
        dropped = 0
        gone: list[str] = []
        while dropped < excess:
            method, props, _ = ch.basic_get(queue, auto_ack=True)  # the head: the oldest of the highest priority
            if method is None:
                break
            dropped += 1
            if props.message_id:
                gone.append(str(props.message_id))
        if dropped:
            self._results().forget_queued(gone)  # never to run: unknown, as on the other brokers
            self._results().add_meta(f"chute.dropped:{queue}", dropped)

    def _waiting(self, link: Link, queue: str) -> int:
        """Ready (on the server or prefetched by a consumer) plus delayed."""
        return self._ready(link, queue) + self._held_counts()[1].get(queue, 0) + self._delayed(link, queue)

    @_guarded
    def declare_group(self, group: str, patterns: Sequence[str]) -> None:
        queue = group_queue(group)
        with self._link() as link:
            ch = link.admin()
            self._declare_topics(ch)
            self._declare_queue(ch, queue)
            for p in patterns:
                ch.queue_bind(queue, TOPICS, p)

    # -- consuming -----------------------------------------------------------------------------
    @_guarded
    def fetch(self, queues: Sequence[str], limit: int, lease: float, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        c = self._consuming()
        with c.io:
            if c.wants(queues, limit):
                c.consume(queues, limit)
            c.pump(0)  # whatever arrived while the caller was busy
            if timeout <= 0:  # what it returns must be all there is: let what the server owes us arrive
                if c.may_owe(queues, limit):
                    c.sync(queues)
                return self._take(c, queues, limit, lease)
            got = self._take(c, queues, limit, lease)
            if got:
                return got
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                c.pump(left)
                got = self._take(c, queues, limit, lease)
                if got:
                    return got

    def _take(self, c: Consumer, queues: Sequence[str], limit: int, lease: float) -> list[Delivery]:
        """Hand out up to `limit` buffered messages, highest priority first, under a new claim."""
        early: list[Message] = []
        out: list[Delivery] = []
        with c.cond:
            found = [m for q in queues for m in c.buffer.get(q, ())]
            if not found:
                return []
            found.sort(key=lambda m: (-m.priority, m.seq))
            taken = found[:limit]
            for m in taken:
                c.buffer[m.queue].remove(m)
            now, wall = time.monotonic(), time.time()
            claim = os.urandom(8).hex()
            for m in taken:
                headers = m.props.headers or {}
                eta = headers.get(H_ETA)
                if isinstance(eta, int) and eta / 1000 > wall + 0.002:  # beyond one pass of the delay chain
                    early.append(m)
                    c.held[m.tag] = Held(m, "", now)  # still ours until its copy is confirmed
                    c.held[m.tag].settling = True
                    continue
                c.held[m.tag] = Held(m, claim, now + lease)
                mid = self._id_of(m)
                n = self._seen.get(mid)
                if n is None:
                    n = _deliveries_before(m)
                self._seen[mid] = n + 1
                out.append(Delivery(m.queue, mid, m.body, claim, n + 1, m.tag))
        if early:
            self._delay_again(c, early)
        return out

    def _id_of(self, m: Message) -> str:
        mid = str(m.props.message_id or "")
        if not mid:  # a plain client that set no message id: give the delivery one
            mid = f"amqp-{m.tag[0]}-{m.tag[1]}-{os.urandom(4).hex()}"
            m.props.message_id = mid
        headers = m.props.headers or {}
        if H_TOPIC in headers and m.queue.startswith(GROUP_PREFIX):  # each group's copy of an event has its own id
            return f"{mid}:{m.queue.removeprefix(GROUP_PREFIX)}"
        return mid

    def _delay_again(self, c: Consumer, messages: list[Message]) -> None:
        """Messages that arrived before their ETA (longer than one pass of the delay chain): send the
        rest of the way, then ack."""
        now = time.time()
        outs = [Outgoing(m.queue, self._id_of(m), m.body, m.priority, int((m.props.headers or {})[H_ETA]) / 1000)
                for m in messages]
        with self._link() as link:
            self._prepare(link, outs)
        self._send([self._frame(o, now) for o in outs])
        c.settle_held([(True, m) for m in messages])

    @_guarded
    def ack(self, deliveries: Sequence[Delivery], results: Sequence[ResultRecord] = ()) -> int:
        if results:
            raise TypeError("RabbitMQ keeps no results: write them to the store, then ack")
        c = self._consumer
        if c is None or not deliveries:
            return 0
        tags: list[tuple[bool, Any]] = []
        with c.io:  # taken out of `held` and acked in one go: a multiple ack must not cover a requeue
            with c.cond:
                for d in deliveries:
                    h = c.held.get(d.tag)
                    if h is None or h.claim != d.claim or h.settling:
                        continue
                    del c.held[d.tag]
                    tags.append((True, h.msg.tag))
                    self._seen.pop(d.id, None)
            if tags:
                c.settle(tags)
        return len(tags)

    @_guarded
    def release(self, deliveries: Sequence[Delivery]) -> int:
        c = self._consumer
        if c is None or not deliveries:
            return 0
        back: list[tuple[Message, int]] = []
        with c.cond:
            for d in deliveries:
                h = c.held.get(d.tag)
                if h is not None and h.claim == d.claim and not h.settling:
                    h.settling = True  # ours until its copy is confirmed
                    n = max(0, self._seen.pop(d.id, 1) - 1)  # a released delivery does not count
                    back.append((h.msg, n))
        self._give_back(c, back)
        return len(back)

    def _give_back(self, c: Consumer, back: list[tuple[Message, int]]) -> None:
        """Requeue messages (held with `settling` set) without counting a delivery.

        RabbitMQ marks a requeued message redelivered, and the next worker would take it for the
        survivor of a crash and run it alone. So a copy that carries its count goes to the queue
        first, then the original is acked; if the copy cannot be sent, the original is requeued
        after all (a crash in between leaves both: a duplicate, never a loss).
        """
        if not back:
            return
        frames = []
        for m, n in back:
            props = copy.copy(m.props)
            props.headers = {k: v for k, v in (m.props.headers or {}).items() if k != "x-delivery-count"}
            props.headers[H_DELIVERIES] = n
            props.delivery_mode = PERSISTENT
            frames.append(("", m.queue, m.body, props))
        try:
            self._send(frames)
            copied = True
        except ChuteError:
            copied = False
        c.settle_held([(copied, m) for m, _ in back])

    @_guarded
    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        c = self._consumer
        if c is None:
            return [False] * len(deliveries)
        c.service()
        due = time.monotonic() + lease
        kept: list[bool] = []
        with c.cond:
            for d in deliveries:
                h = c.held.get(d.tag)
                ok = h is not None and h.claim == d.claim
                if h is not None and ok:
                    h.deadline = due
                kept.append(ok)
        return kept

    def _replace(self, delivery: Delivery, frame: Callable[[Held], tuple[str, str, bytes, Any]],
                 prepare: Callable[[Link, Held], None]) -> bool:
        """Publish a copy in place of a held message (confirmed), then ack the original."""
        c = self._consumer
        if c is None:
            return False
        with c.cond:
            h = c.held.get(delivery.tag)
            if h is None or h.claim != delivery.claim:
                return False
            h.settling = True  # the lease may not run out under us while we publish
        try:
            with self._link() as link:
                prepare(link, h)
            self._send([frame(h)])
        except BaseException:
            with c.cond:
                h.settling = False
            raise
        with c.io:
            with c.cond:
                mine = c.held.get(delivery.tag) is h
                if mine:
                    del c.held[delivery.tag]
                self._seen.pop(delivery.id, None)
            if mine:
                c.settle([(True, h.msg.tag)])
        return True

    @_guarded
    def nack(self, delivery: Delivery, body: bytes, retry_at: float) -> bool:
        def build(h: Held) -> Outgoing:
            return Outgoing(delivery.queue, delivery.id, body, h.msg.priority, retry_at)

        return self._replace(delivery, lambda h: self._frame(build(h), time.time()),
                             lambda link, h: self._prepare(link, [build(h)]))

    @_guarded
    def dead_letter(self, delivery: Delivery, reason: str, body: bytes | None = None) -> bool:
        def frame(h: Held) -> tuple[str, str, bytes, Any]:
            headers = {H_REASON: reason, H_DEAD_AT: int(time.time() * 1000), H_QUEUE: delivery.queue}
            props = pika.BasicProperties(delivery_mode=PERSISTENT, message_id=delivery.id, priority=h.msg.priority,
                                         headers=headers)
            return "", dead_queue(delivery.queue), delivery.body if body is None else body, props

        return self._replace(delivery, frame, lambda link, h: self._declare_queue(link.admin(), delivery.queue))

    # -- operating -----------------------------------------------------------------------------
    def _count_of(self, link: Link, queue: str) -> int | None:
        """Messages ready in a queue, or None if it does not exist (the 404 closes only the admin channel)."""
        try:
            return int(link.admin().queue_declare(queue, passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return None
            raise

    def _ready(self, link: Link, queue: str) -> int:
        return self._count_of(link, queue) or 0

    def _delayed(self, link: Link, queue: str) -> int:
        top = max(self._levels.get(queue, -1), _registry(self._results().get_meta(DELAYED_KEY)).get(queue, -1))
        return sum(self._count_of(link, delay_queue(queue, k)) or 0 for k in range(top + 1))

    def _queues(self, queue: str | None = None) -> list[str]:
        if queue is not None:
            return [queue]
        return sorted(set(_registry(self._results().get_meta(QUEUES_KEY))) | (self._declared - {"topics"}))

    @_guarded
    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Counts per queue; without `queues`, every known queue that holds anything (as SQLite lists)."""
        c = self._consumer
        if c is not None and self._pid == os.getpid():
            c.service()  # leases that ran out go back first
        names = sorted(set(queues)) if queues is not None else self._queues()
        held, prefetched = self._held_counts()
        out = []
        with self._link() as link:
            for q in names:
                s = QueueStats(q, self._ready(link, q) + prefetched.get(q, 0), held.get(q, 0), self._delayed(link, q),
                               self._count_of(link, dead_queue(q)) or 0)
                if queues is not None or s.ready or s.in_flight or s.delayed or s.dead:
                    out.append(s)
        return out

    def local_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Messages this process holds per queue: handed out under a lease, and prefetched (waiting to
        be asked for: `ready` to the application, though RabbitMQ counts them as delivered)."""
        c = self._consumer
        held: dict[str, int] = {}
        prefetched: dict[str, int] = {}
        if c is None or self._pid != os.getpid():
            return held, prefetched
        with c.cond:
            for h in c.held.values():
                held[h.msg.queue] = held.get(h.msg.queue, 0) + 1
            for q, buf in c.buffer.items():
                if buf:
                    prefetched[q] = len(buf)
        return held, prefetched

    def _held_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Ours, plus what other live workers reported holding with their last heartbeat."""
        held, prefetched = self.local_counts()
        for w in self._results().workers():
            if w.id in self._my_workers:
                continue
            for mine, theirs in ((held, w.in_flight), (prefetched, w.prefetched)):
                for q, n in theirs.items():
                    mine[q] = mine.get(q, 0) + n
        return held, prefetched

    def _browse(self, link: Link, queue: str, limit: int) -> list[tuple[int, DeadLetter, Any]]:
        """Take up to `limit` dead letters of `queue` without acking them: (delivery tag, letter, props)."""
        ch = link.admin()
        out: list[tuple[int, DeadLetter, Any]] = []
        if self._count_of(link, dead_queue(queue)) is None:
            return out
        while len(out) < limit:
            method, props, body = ch.basic_get(dead_queue(queue), auto_ack=False)
            if method is None:
                break
            out.append((method.delivery_tag, _letter(queue, props, body), props))
        return out

    def _end_browse(self, link: Link, queue: str, remove: Sequence[int]) -> None:
        """Ack the browsed letters in `remove`, give the rest back in their order, and wait until the
        queue has done both (a passive declare is answered after them)."""
        ch = link.admin()
        for tag in remove:
            ch.basic_ack(tag)
        ch.basic_nack(0, multiple=True, requeue=True)
        ch.queue_declare(dead_queue(queue), passive=True)

    @_guarded
    def dead_letters(self, queue: str | None = None, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        with self._link() as link:
            for q in self._queues(queue):
                browsed = self._browse(link, q, offset + limit)
                self._end_browse(link, q, [])
                found += [letter for _, letter, _ in browsed]
        found.sort(key=lambda d: d.dead_at)  # stable: each queue's own order is kept
        return found[offset:offset + limit]

    def _move_dead(self, queue: str | None, ids: Sequence[str] | None, replay: bool) -> int:
        wanted = None if ids is None else set(ids)
        moved = 0
        for q in self._queues(queue):
            with self._link() as link:
                if wanted is None and not replay:
                    if self._count_of(link, dead_queue(q)) is not None:
                        moved += int(link.admin().queue_purge(dead_queue(q)).method.message_count)
                    continue
                while True:  # in chunks when taking all; in one pass when picking ids
                    browsed = self._browse(link, q, 500 if wanted is None else 1 << 30)
                    chosen = [(tag, letter, props) for tag, letter, props in browsed
                              if wanted is None or letter.id in wanted]
                    if replay and chosen:
                        outs = [Outgoing(q, letter.id, letter.body, int(props.priority or 0)) for _, letter, props
                                in chosen]
                        now = time.time()  # a DEAD record would answer get() with the old failure
                        self._results().store([ResultRecord(o.id, State.QUEUED, queue=q, updated_at=now,
                                                            expires_at=now + QUEUED_TTL) for o in outs])
                        self._prepare(link, outs)
                        self._send([self._frame(o, time.time()) for o in outs])
                    self._end_browse(link, q, [tag for tag, _, _ in chosen])
                    moved += len(chosen)
                    if wanted is not None or not browsed:
                        break
        return moved

    @_guarded
    def replay(self, queue: str | None = None, ids: Sequence[str] | None = None) -> int:
        return self._move_dead(queue, ids, replay=True)

    @_guarded
    def purge_dead(self, queue: str | None = None, ids: Sequence[str] | None = None) -> int:
        return self._move_dead(queue, ids, replay=False)

    # -- the worker's heartbeat ----------------------------------------------------------------
    def beat(self, worker_id: str) -> tuple[dict[str, int], dict[str, int]]:
        if self._consumer is not None and self._pid == os.getpid():
            self._consumer.service()  # AMQP heartbeats and lease expiry, even while the consumer thread waits
        self._my_workers.add(worker_id)
        return self.local_counts()

    def stopped(self, worker_id: str) -> None:
        if worker_id in self._my_workers and self._consumer is not None and self._pid == os.getpid():
            c = self._consumer  # our worker stopped: what we prefetched for it goes back at once
            self._give_back(c, [(m, _deliveries_before(m)) for m in c.stop()])

    # -- asyncio: the same frames on aio-pika (amqp_async.py) ----------------------------------
    @property
    def aio(self) -> AsyncQueue:
        """The asyncio side, made on first use (importing aio-pika takes ~0.1 s)."""
        if self._aio is None:
            self._aio = _LazyAsync(self)
        return cast(AsyncQueue, self._aio)

    def _make_async(self) -> Any:
        try:
            from .amqp_async import AsyncAMQP
        except ImportError as exc:
            raise ChuteError(f"the asyncio side of the RabbitMQ broker needs aio-pika ({exc}): "
                             "pip install 'chute[amqp]'") from None
        return AsyncAMQP(self)

    def close(self) -> None:
        if self._consumer is not None and self._pid == os.getpid():
            self._closer()
        self._consumer = None
        if self._aio is not None:
            self._aio.close()
        self._pool.close()
        if self._owns_store and self._store is not None:
            self._store.close()


def _deliveries_before(m: Message) -> int:
    """The deliveries a message had before this one that count against max_deliveries: those a copy
    given back carries, plus RabbitMQ's own (a quorum queue counts returns; a classic queue only
    says whether the message was delivered before)."""
    headers = m.props.headers or {}
    given = headers.get(H_DELIVERIES)
    count = headers.get("x-delivery-count")
    return (given if isinstance(given, int) else 0) + \
        (int(count) if isinstance(count, int) else (1 if m.redelivered else 0))


def _registry(raw: str | None) -> dict[str, int]:
    """A registry in meta: one `name<TAB>level` a line."""
    out: dict[str, int] = {}
    for line in (raw or "").split("\n"):
        name, _, level = line.partition("\t")
        if name:
            out[name] = int(level) if level.lstrip("-").isdigit() else 0
    return out


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _letter(queue: str, props: Any, body: bytes) -> DeadLetter:
    """A dead letter as chute wrote it (reason headers), or as RabbitMQ dead-lettered it (x-death)."""
    headers = props.headers or {}
    reason, at = headers.get(H_REASON), headers.get(H_DEAD_AT)
    if isinstance(at, int):
        at = at / 1000  # written in ms: AMQP headers carry no floats
    if reason is None:
        deaths = headers.get("x-death") or [{}]
        death = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
        reason = f"rabbitmq_{_text(death.get('reason', 'dead_lettered'))}: by RabbitMQ from queue " \
                 f"{_text(death.get('queue', queue))}"
        stamp: Any = death.get("time")  # an aware datetime, as pika decodes AMQP timestamps
        at = stamp.timestamp() if hasattr(stamp, "timestamp") else stamp
    return DeadLetter(queue, str(props.message_id or ""), body, _text(reason),
                      float(at) if isinstance(at, (int, float)) else 0.0)




class _LazyAsync:
    """The asyncio side, its aio-pika half made off the loop on the first publish."""

    def __init__(self, broker: AMQPBroker) -> None:
        self._broker = broker
        self._made: Any = None

    async def publish(self, messages: Sequence[Outgoing]) -> list[str]:
        if self._made is None:
            made = await asyncio.to_thread(self._broker._make_async)  # not on the loop: the import is slow
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
