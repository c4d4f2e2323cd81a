"""The worker's consuming connection, used by one thread at a time: the consumer thread fetches and acks
(and so reads its own deliveries without a hand-off), the heartbeat thread extends leases (kept apart,
under their own lock) and answers AMQP heartbeats whenever the connection is idle."""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pika
import pika.exceptions

from ...errors import BrokerError, BrokerUnavailable
from .links import AMQP_ERRORS, close_quietly, describe

log = logging.getLogger("chute.amqp")
WINDOWS = 2  # basic.qos = 2 x a fetch's limit: the worker holds one window, the next is on its way
MAX_BACKOFF = 5.0  # seconds between reconnection attempts, at most


class Message:
    """A delivery in the consumer's buffer, not yet handed to the application."""

    __slots__ = ("seq", "queue", "tag", "props", "body", "redelivered")

    def __init__(self, seq: int, queue: str, tag: tuple[int, int], props: Any, body: bytes, redelivered: bool) -> None:
        self.seq, self.queue, self.tag, self.props, self.body, self.redelivered = (
            seq, queue, tag, props, body, redelivered)

    @property
    def priority(self) -> int:
        return int(self.props.priority or 0)


class Held:
    """A message handed out under a lease: who holds it (claim) and until when (monotonic)."""

    __slots__ = ("msg", "claim", "deadline", "settling")

    def __init__(self, msg: Message, claim: str, deadline: float, settling: bool = False) -> None:
        self.msg, self.claim, self.deadline = msg, claim, deadline
        self.settling = settling  # being acked, requeued or copied: no longer the claim's, nor to expire


class Consumer:
    """The consuming connection: used by one thread at a time under `io` (the worker's consumer
    thread, as it fetches and acks), while leases and buffers are kept under `cond` so the
    heartbeat thread can extend leases without waiting for it.

    Whoever holds `io` also receives deliveries into the buffer, expires leases and answers AMQP
    heartbeats; `service()` lets another thread do that when the connection is idle (a worker
    whose prefetch is full of long tasks fetches nothing, but heartbeats every 2 s).
    `declare(channel, queue)` declares a work queue and its neighbours before consuming from it.
    """

    def __init__(self, params: pika.URLParameters, declare: Callable[[Any, str], None], url: str) -> None:
        self._params, self._declare, self._url = params, declare, url
        self.io = threading.RLock()
        self.cond = threading.Condition(threading.Lock())
        self.buffer: dict[str, collections.deque[Message]] = {}
        self.held: dict[object, Held] = {}  # keyed by Delivery.tag: (generation, delivery tag)
        self._wanted: dict[str, None] = {}  # queues to consume, in order of first request
        self._tags: dict[str, str] = {}  # consumer tag -> queue, on the current channel
        self.qos = 0
        self.gen = 0  # connection generation: delivery tags of an older one are stale
        self.down: str | None = None  # why the connection is down, or None
        self._seq = itertools.count()
        self._conn: Any = None
        self._ch: Any = None
        self._retry_at, self._backoff = 0.0, 0.1
        # set when something since the last sync may leave deliveries on their way to us that a
        # zero-timeout fetch must wait for: a new consumer or prefetch, a requeue, a publish
        self.unsynced = True

    # -- with `io` held ---------------------------------------------------------------------------
    def consume(self, queues: Sequence[str], limit: int) -> None:
        """Connect if need be, and consume from `queues` with a prefetch of at least `limit`."""
        self._ensure()
        try:
            if limit > self.qos // WINDOWS:  # basic.qos applies to consumers started after it: restart ours
                self.qos = limit * WINDOWS
                self._ch.basic_qos(prefetch_count=self.qos)
                for tag in list(self._tags):
                    self._ch.basic_cancel(tag)
                    del self._tags[tag]
            for q in queues:
                self._wanted.setdefault(q, None)
            running = set(self._tags.values())
            for q in list(self._wanted):
                if q not in running:
                    self._consume(q)
                    self.unsynced = True
        except AMQP_ERRORS as exc:
            raise self._lost(exc) from None

    def wants(self, queues: Sequence[str], limit: int) -> bool:
        return self._conn is None or limit > self.qos // WINDOWS or any(q not in self._wanted for q in queues)

    def may_owe(self, queues: Sequence[str], limit: int) -> bool:
        """True if the server may still be sending us messages of these queues that a fetch of `limit`
        must wait for: fewer than `limit` are buffered (none, or something since the last sync may
        have left deliveries on their way), and some queue's consumer is below its prefetch (at
        basic.qos unacked messages, RabbitMQ sends nothing more). A worker that only acks meanwhile
        takes what is buffered without a round trip."""
        with self.cond:
            buffered = sum(len(self.buffer.get(q, ())) for q in queues)
            if buffered >= limit or (buffered and not self.unsynced):
                return False
            held: dict[str, int] = {}
            for h in self.held.values():
                held[h.msg.queue] = held.get(h.msg.queue, 0) + 1
            return any(held.get(q, 0) + len(self.buffer.get(q, ())) < self.qos for q in queues)

    def sync(self, queues: Sequence[str]) -> None:
        """Make every delivery the server owes us for these queues arrive in the buffer.

        A passive declare is answered by the queue process after it has handled everything sent to it
        before (our acks and requeues, publishes confirmed to anyone), and whatever it delivered to us
        meanwhile is already in our channel's mailbox; a basic.qos behind it is answered by the channel
        only after passing those deliveries on. So after both, the buffer is complete.
        """
        self._ensure()
        try:
            self._flush_expired()
            for q in queues:
                if q in self._wanted:
                    self._ch.queue_declare(q, passive=True)
            self._ch.basic_qos(prefetch_count=max(self.qos, 1))
            self._conn.process_data_events(0)  # dispatch what arrived meanwhile
            self.unsynced = False
        except AMQP_ERRORS as exc:
            raise self._lost(exc) from None

    def pump(self, timeout: float) -> None:
        """Receive for up to `timeout` seconds (returning early once something arrived)."""
        self._ensure()
        try:
            self._flush_expired()
            due = self._next_expiry()
            if due is not None:
                timeout = min(timeout, max(0.0, due - time.monotonic()))
            self._conn.process_data_events(time_limit=timeout)
            self._flush_expired()
        except AMQP_ERRORS as exc:
            raise self._lost(exc) from None

    def settle(self, tags: Sequence[tuple[bool, Any]]) -> None:
        """Send acks (True) or requeues (False) for delivery tags (already removed from `held`);
        stale ones are skipped. Acks that cover every outstanding lower tag go as one multiple ack."""
        if self._conn is None:
            return
        acks = sorted(tag for ack, (gen, tag) in tags if ack and gen == self.gen)
        requeues = [tag for ack, (gen, tag) in tags if not ack and gen == self.gen]
        try:
            impl = self._ch._impl
            if acks:
                with self.cond:  # what else the server still counts as delivered to us
                    others = [h.msg.tag[1] for h in self.held.values() if h.msg.tag[0] == self.gen]
                    others += [m.tag[1] for buf in self.buffer.values() for m in buf]
                lowest_other = min(others, default=None)
                run = [t for t in acks if lowest_other is None or t < lowest_other]
                if run:  # one frame (one send) for the whole run
                    impl.basic_ack(run[-1], multiple=True)
                for tag in acks[len(run):]:
                    impl.basic_ack(tag)
            for tag in requeues:
                impl.basic_nack(tag, requeue=True)
            if requeues:
                self.unsynced = True
            self._conn.process_data_events(0)  # flush them now: the caller may exit right after
        except AMQP_ERRORS as exc:
            raise self._lost(exc) from None

    # -- from any thread ----------------------------------------------------------------------------
    def service(self) -> None:
        """Answer heartbeats and expire leases, if no other thread is using the connection."""
        if not self.io.acquire(blocking=False):
            return  # its user is doing this already
        try:
            if self._conn is not None:
                try:
                    self._flush_expired()
                    self._conn.process_data_events(0)
                except AMQP_ERRORS as exc:
                    self._lost(exc)
        finally:
            self.io.release()

    def stop(self) -> list[Message]:
        """Stop consuming; what was prefetched moves to `held`, marked settling, for the caller to give
        back (leased messages stay held)."""
        with self.io:
            if self._conn is None:
                return []
            try:
                for tag in list(self._tags):
                    self._ch.basic_cancel(tag)  # also requeues deliveries not yet dispatched
                    del self._tags[tag]
            except AMQP_ERRORS as exc:
                self._lost(exc)
                return []
            self._wanted.clear()
            with self.cond:
                back = [m for buf in self.buffer.values() for m in buf]
                self.buffer.clear()
                for m in back:
                    self.held[m.tag] = Held(m, "", 0.0, settling=True)
            return back

    def close(self) -> None:
        with self.io:
            conn, self._conn, self._ch = self._conn, None, None
            close_quietly(conn)

    # -- internals (with `io` held) -----------------------------------------------------------------
    def _ensure(self) -> None:
        if self._conn is not None:
            return
        if time.monotonic() < self._retry_at:
            raise BrokerUnavailable(f"RabbitMQ at {self._url} is unreachable ({self.down}); next connection "
                                    f"attempt in {self._retry_at - time.monotonic():.1f} s")
        conn = None
        try:
            conn = pika.BlockingConnection(self._params)
            self._conn, self._ch = conn, conn.channel()
            self._ch.basic_qos(prefetch_count=max(self.qos, 1))
            for q in list(self._wanted):
                self._consume(q)
        except AMQP_ERRORS as exc:
            self._conn = self._ch = None
            close_quietly(conn)
            self.down = describe(exc)
            self._retry_at = time.monotonic() + self._backoff  # reconnect with exponential backoff
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)
            raise BrokerUnavailable(f"RabbitMQ at {self._url} is unreachable ({self.down})") from None
        if self.down is not None:
            log.warning("reconnected to RabbitMQ at %s", self._url)
        self.down, self._backoff = None, 0.1

    def _consume(self, queue: str) -> None:
        try:
            self._declare(self._ch, queue)
        except (BrokerError, pika.exceptions.ChannelClosedByBroker):
            # e.g. declared elsewhere with other arguments: the refusal closed our channel, so start
            # afresh next time, without this queue (the caller gets the error saying why)
            self._wanted.pop(queue, None)
            self._reset()
            raise
        tag = self._ch.basic_consume(queue, self._on_message)
        self._tags[tag] = queue

    def _on_message(self, _ch: Any, method: Any, props: Any, body: bytes) -> None:
        queue = self._tags.get(method.consumer_tag)
        if queue is None:
            return
        msg = Message(next(self._seq), queue, (self.gen, method.delivery_tag), props, body, bool(method.redelivered))
        with self.cond:
            self.buffer.setdefault(queue, collections.deque()).append(msg)

    def _next_expiry(self) -> float | None:
        with self.cond:
            return min((h.deadline for h in self.held.values() if not h.settling), default=None)

    def _flush_expired(self) -> None:
        """A lease ran out: requeue the message for anyone; its claim is void."""
        now = time.monotonic()
        with self.cond:
            expired = [key for key, h in self.held.items() if h.deadline <= now and not h.settling]
            for key in expired:
                del self.held[key]
        if expired:
            self.settle([(False, key) for key in expired])

    def _reset(self) -> None:
        """Drop the connection: the server requeues everything it had delivered to us, so every
        claim of this generation is void."""
        self.unsynced = True
        conn, self._conn, self._ch = self._conn, None, None
        close_quietly(conn)
        with self.cond:
            self.gen += 1
            self.held.clear()
            self.buffer.clear()
        self._tags.clear()

    def _lost(self, exc: BaseException) -> BrokerUnavailable:
        """The connection or channel broke."""
        self._reset()
        self.down = describe(exc)
        log.warning("lost the connection to RabbitMQ at %s (%s); reconnecting", self._url, self.down)
        return BrokerUnavailable(f"lost the connection to RabbitMQ at {self._url} ({self.down}); the messages it "
                                 "had delivered go back to their queues")
