"""How the RabbitMQ broker talks AMQP from many threads: a pool of publishing connections and one
consuming connection owned by an I/O thread.

pika's BlockingConnection is not thread-safe. Producers publish from any thread, so each publish
takes a connection of its own from a small pool (returned afterwards; idle ones are dropped before
the server's heartbeat timeout could close them). The worker fetches from its consumer thread and
extends leases from its heartbeat thread, so the consuming connection belongs to one I/O thread:
it receives deliveries into a local buffer (never more than basic.qos), sends acks and requeues
handed to it, expires leases and keeps the AMQP heartbeats serviced however busy the tasks are.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pika
import pika.exceptions

from ..errors import BrokerUnavailable

log = logging.getLogger("chute.amqp")
if logging.getLogger("pika").level == logging.NOTSET:
    # pika logs every failed reconnect with a traceback; chute reports them itself (once, masked,
    # as BrokerUnavailable), so pika speaks only if the application asked it to
    logging.getLogger("pika").setLevel(logging.CRITICAL)
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPConnectionError, OSError)
AMQP_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)
REQUEST_TIMEOUT = 5.0  # seconds any call waits for the server before BrokerUnavailable
MAX_BACKOFF = 5.0  # seconds between reconnection attempts, at most


def _noop() -> None:
    pass


class Link:
    """One pooled connection: a channel in confirm mode that publishes without waiting per message,
    and a channel for declarations, counts and dead-letter browsing (a channel error closes only it)."""

    def __init__(self, params: pika.URLParameters) -> None:
        self.conn = pika.BlockingConnection(params)
        self.used = time.monotonic()
        self._pub: Any = None
        self._admin: Any = None
        self._next_tag = 1
        self._unconfirmed: set[int] = set()
        self._nacked: set[int] = set()
        self._returned: list[Any] = []

    @property
    def is_open(self) -> bool:
        return bool(self.conn.is_open)

    def admin(self) -> Any:
        """The channel for everything but publishing, reopened if a channel error closed it."""
        if self._admin is None or not self._admin.is_open:
            self._admin = self.conn.channel()
        return self._admin

    def _publisher(self) -> Any:
        if self._pub is None or not self._pub.is_open:
            ch = self.conn.channel()
            selected: list[bool] = []

            def on_select_ok(_frame: Any) -> None:
                selected.append(True)
                self.conn.call_later(0, _noop)  # a ready event: process_data_events returns now

            # Confirm mode on pika's channel implementation, not BlockingChannel.confirm_delivery():
            # that one waits after every message, and a batch must cost one wait.
            ch._impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=on_select_ok)
            ch._impl.add_on_return_callback(self._on_return)
            self._wait(lambda: bool(selected), REQUEST_TIMEOUT, "confirm.select")
            self._pub, self._next_tag = ch, 1
            self._unconfirmed.clear()
        return self._pub

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tags = {t for t in self._unconfirmed if t <= method.delivery_tag} if method.multiple else {method.delivery_tag}
        self._unconfirmed -= tags
        if isinstance(method, pika.spec.Basic.Nack):
            self._nacked |= tags
        if not self._unconfirmed:
            self.conn.call_later(0, _noop)  # a ready event: process_data_events returns now

    def _on_return(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        self._returned.append(properties)  # basic.return comes before the message's confirm

    def publish(self, messages: Sequence[tuple[str, str, bytes, Any]], timeout: float) -> tuple[list[int], list[Any]]:
        """Publish (exchange, routing key, body, properties) messages, all mandatory, then wait once for
        every confirm. Return the indexes the server nacked and the properties of returned messages."""
        ch = self._publisher()
        first = self._next_tag
        self._nacked.clear()
        self._returned.clear()
        impl = ch._impl
        for exchange, key, body, props in messages:
            self._unconfirmed.add(self._next_tag)
            self._next_tag += 1
            impl.basic_publish(exchange, key, body, props, mandatory=True)
        self._wait(lambda: not self._unconfirmed, timeout, f"confirms of {len(messages)} message(s)")
        self.used = time.monotonic()
        return sorted(t - first for t in self._nacked), list(self._returned)

    def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerUnavailable(f"RabbitMQ sent no {what} within {timeout:g} s")
            self.conn.process_data_events(time_limit=min(left, 1.0))

    def close(self) -> None:
        try:
            if self.conn.is_open:
                self.conn.close()
        except AMQP_ERRORS:
            pass


class Pool:
    """Idle Links of one process, reused by whichever thread publishes next (a web server's
    short-lived threads would otherwise each leave a connection open)."""

    MAX_IDLE = 8

    def __init__(self, params: pika.URLParameters) -> None:
        self._params = params
        self._idle: list[Link] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # an idle connection services no heartbeats: drop it well before the server would
        heartbeat = params.heartbeat if isinstance(params.heartbeat, (int, float)) and params.heartbeat else 60
        self._max_idle_age = max(1.0, heartbeat / 2)

    def take(self) -> Link:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's sockets are not ours to use or close
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                link = self._idle.pop()
                if link.is_open and time.monotonic() - link.used < self._max_idle_age:
                    return link
                link.close()
        return Link(self._params)

    def give(self, link: Link) -> None:
        with self._lock:
            if link.is_open and self._pid == os.getpid() and len(self._idle) < self.MAX_IDLE:
                self._idle.append(link)
                return
        link.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            mine = self._pid == os.getpid()
        for link in idle if mine else ():
            link.close()


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

    def __init__(self, msg: Message, claim: str, deadline: float) -> None:
        self.msg, self.claim, self.deadline, self.settling = msg, claim, deadline, False


class _Request:
    __slots__ = ("kind", "queues", "limit", "done", "error")

    def __init__(self, kind: str, queues: Sequence[str], limit: int) -> None:
        self.kind, self.queues, self.limit = kind, list(queues), limit
        self.done = False
        self.error: BaseException | None = None


class Consumer:
    """The consuming connection and its I/O thread. Every other thread only touches the buffers and
    leases (under `cond`) and hands work to the thread: acks and requeues, consume and sync requests.

    `declare(channel, queue)` declares a work queue and its neighbours before consuming from it;
    `consumer_args` are the basic.consume arguments.
    """

    def __init__(self, params: pika.URLParameters, declare: Callable[[Any, str], None], url: str) -> None:
        self._params, self._declare, self._url = params, declare, url
        self.cond = threading.Condition()
        self.buffer: dict[str, collections.deque[Message]] = {}
        self.held: dict[object, Held] = {}  # keyed by Delivery.tag: (generation, delivery tag)
        self._outbox: list[tuple[bool, Any]] = []  # (ack, Delivery.tag): ack, or requeue
        self._requests: collections.deque[_Request] = collections.deque()
        self._wanted: dict[str, None] = {}  # queues to consume, in order of first request
        self._tags: dict[str, str] = {}  # consumer tag -> queue, on the current channel
        self.qos = 0
        self.gen = 0  # connection generation: delivery tags of an older one are stale
        self.down: str | None = None  # why the connection is down, or None while up
        self._seq = itertools.count()
        self._conn: Any = None
        self._ch: Any = None
        self._closing = False
        self._backoff = 0.1
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chute-amqp-io", daemon=True)
        self._thread.start()

    # -- called from any thread ------------------------------------------------------------------
    def wake(self) -> None:
        conn = self._conn
        if conn is not None:
            try:
                conn.add_callback_threadsafe(_noop)
            except AMQP_ERRORS:
                pass  # closing or closed: the I/O thread notices by itself

    def send(self, tags: list[tuple[bool, Any]]) -> None:
        """Queue acks (True) or requeues (False) for the I/O thread; call with `cond` held."""
        self._outbox.extend(tags)

    def request(self, kind: str, queues: Sequence[str], limit: int = 0) -> None:
        """Ask the I/O thread to consume from `queues` ("consume") or to make sure every delivery the
        server has sent for them is in the buffer ("sync"); wait for it to be done."""
        req = _Request(kind, queues, limit)
        with self.cond:
            if self.down is not None and not self._connected.is_set() and self._backoff > 0.1:
                raise BrokerUnavailable(f"RabbitMQ at {self._url} is unreachable ({self.down}); retrying in "
                                        "the background")
            self._requests.append(req)
        self.wake()
        deadline = time.monotonic() + REQUEST_TIMEOUT
        with self.cond:
            while not req.done:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrokerUnavailable(f"RabbitMQ at {self._url} did not answer within {REQUEST_TIMEOUT:g} s")
                self.cond.wait(left)
        if req.error is not None:
            raise req.error

    def wants(self, queues: Sequence[str], limit: int) -> bool:
        """True if consuming from `queues` needs a request (a new queue, or a larger prefetch)."""
        return limit > self.qos or any(q not in self._wanted for q in queues) or self.down is not None

    def close(self) -> None:
        with self.cond:
            self._closing = True
            self.cond.notify_all()
        self.wake()
        self._thread.join(timeout=REQUEST_TIMEOUT + 1)

    # -- the I/O thread --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self.cond:
                if self._closing and not self._outbox:
                    break
            if self._conn is None:
                if self._closing:
                    break
                self._connect()
                continue
            try:
                self._conn.process_data_events(time_limit=self._tick())
                self._work()
            except AMQP_ERRORS as exc:
                self._lost(exc)
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except AMQP_ERRORS:
                pass

    def _connect(self) -> None:
        try:
            conn = pika.BlockingConnection(self._params)
        except AMQP_ERRORS as exc:
            self._failed(exc)
            return
        try:
            ch = conn.channel()
            with self.cond:
                wanted, qos = list(self._wanted), self.qos
            ch.basic_qos(prefetch_count=max(qos, 1))
            self._conn, self._ch = conn, ch
            for q in wanted:
                self._consume(q)
        except AMQP_ERRORS as exc:
            self._conn = None
            try:
                conn.close()
            except AMQP_ERRORS:
                pass
            self._failed(exc)
            return
        with self.cond:
            if self.down is not None and self.gen:
                log.warning("reconnected to RabbitMQ at %s", self._url)
            self.down = None
            self._backoff = 0.1
            self._connected.set()
            self.cond.notify_all()

    def _failed(self, exc: BaseException) -> None:
        """A connection attempt failed: fail waiting requests, then back off (exponentially, capped)."""
        with self.cond:
            self.down = _describe(exc)
            self._connected.clear()
            self._fail_requests(BrokerUnavailable(f"RabbitMQ at {self._url} is unreachable ({self.down})"))
            pause = self._backoff
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)
            deadline = time.monotonic() + pause
            while not self._closing and time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())

    def _lost(self, exc: BaseException) -> None:
        """The connection or channel broke: the server requeues everything it had delivered to us, so
        every claim of this generation is void."""
        conn, self._conn, self._ch = self._conn, None, None
        try:
            if conn is not None and conn.is_open:
                conn.close()
        except AMQP_ERRORS:
            pass
        with self.cond:
            self.gen += 1
            self.held.clear()
            self.buffer.clear()
            self._outbox.clear()
            self._tags.clear()
            self.down = _describe(exc)
            self._connected.clear()
            self._fail_requests(BrokerUnavailable(f"lost the connection to RabbitMQ at {self._url} ({self.down}); "
                                                  "messages it had delivered go back to their queues"))
            self.cond.notify_all()
        if not self._closing:
            log.warning("lost the connection to RabbitMQ at %s (%s); reconnecting", self._url, self.down)

    def _fail_requests(self, error: BaseException) -> None:
        while self._requests:
            req = self._requests.popleft()
            req.error, req.done = error, True
        self.cond.notify_all()

    def _tick(self) -> float:
        with self.cond:
            if self._outbox or self._requests or self._closing:
                return 0.0
            due = min((h.deadline for h in self.held.values() if not h.settling), default=None)
        wait = 0.5 if due is None else due - time.monotonic()
        return max(0.0, min(wait, 0.5))

    def _work(self) -> None:
        now = time.monotonic()
        with self.cond:
            for key, h in list(self.held.items()):  # a lease ran out: back to the queue for anyone
                if h.deadline <= now and not h.settling:
                    del self.held[key]
                    self._outbox.append((False, key))
            outbox, self._outbox = self._outbox, []
            requests = list(self._requests)
            self._requests.clear()
            gen = self.gen
        ch = self._ch
        for ack, (g, tag) in outbox:  # before any request: a sync must see its requeues come back
            if g != gen:
                continue
            if ack:
                ch._impl.basic_ack(tag)
            else:
                ch._impl.basic_nack(tag, requeue=True)
        for req in requests:
            try:
                if req.kind == "consume":
                    self._serve_consume(req)
                else:
                    self._serve_sync(req)
            except pika.exceptions.ChannelClosedByBroker as exc:  # e.g. a queue declared with other arguments
                req.error = _channel_error(exc)
                with self.cond:
                    req.done = True
                    self.cond.notify_all()
                raise
            with self.cond:
                req.done = True
                self.cond.notify_all()
        if outbox:
            self._conn.process_data_events(0)  # flush the acks

    def _serve_consume(self, req: _Request) -> None:
        ch = self._ch
        if req.limit > self.qos:  # basic.qos applies to consumers started after it: restart ours
            self.qos = req.limit
            ch.basic_qos(prefetch_count=self.qos)
            for tag in list(self._tags):
                ch.basic_cancel(tag)
                del self._tags[tag]
        with self.cond:
            for q in req.queues:
                self._wanted.setdefault(q, None)
            wanted = list(self._wanted)
        running = set(self._tags.values())
        for q in wanted:
            if q not in running:
                self._consume(q)
        self._serve_sync(req)

    def _consume(self, queue: str) -> None:
        self._declare(self._ch, queue)
        tag = self._ch.basic_consume(queue, self._on_message)
        self._tags[tag] = queue

    def _serve_sync(self, req: _Request) -> None:
        """Make every delivery the server owes us for these queues arrive before we answer.

        A passive declare is answered by the queue process after it has handled everything sent to it
        before (our acks, requeues; publishes confirmed to anyone), and whatever it delivered to us in
        the meantime is already in our channel's mailbox; a basic.qos behind it is answered by the
        channel only after it has passed those deliveries on. So after both, the buffer is complete.
        """
        for q in req.queues:
            if q in self._wanted:
                self._ch.queue_declare(q, passive=True)
        self._ch.basic_qos(prefetch_count=max(self.qos, 1))
        self._conn.process_data_events(0)  # dispatch what arrived meanwhile into the buffer

    def _on_message(self, _ch: Any, method: Any, props: Any, body: bytes) -> None:
        queue = self._tags.get(method.consumer_tag)
        if queue is None:
            return
        with self.cond:
            msg = Message(next(self._seq), queue, (self.gen, method.delivery_tag), props, body,
                          bool(method.redelivered))
            self.buffer.setdefault(queue, collections.deque()).append(msg)
            self.cond.notify_all()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "…"


def _channel_error(exc: pika.exceptions.ChannelClosedByBroker) -> BaseException:
    from ..errors import BrokerError

    return BrokerError(f"RabbitMQ refused: {exc.reply_code} {exc.reply_text}")
