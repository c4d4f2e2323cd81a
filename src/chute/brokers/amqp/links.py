"""pika connections for producing from many threads: a pool of Links, each a confirming channel that
publishes a whole batch before waiting once, and a channel for declarations, counts and browsing.

pika's BlockingConnection is not thread-safe. Producers publish from any thread, so each publish takes
a connection of its own from a small pool (returned afterwards; idle ones are dropped before the
server's heartbeat timeout could close them).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pika
import pika.exceptions

from ...errors import BrokerUnavailable
from .publish import REQUEST_TIMEOUT, Confirms, Frame, Returned

if logging.getLogger("pika").level == logging.NOTSET:
    # pika logs every failed reconnect with a traceback; chute reports them itself (once, masked,
    # as BrokerUnavailable), so pika speaks only if the application asked it to
    logging.getLogger("pika").setLevel(logging.CRITICAL)
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPConnectionError, OSError)
AMQP_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)


def _noop() -> None:
    pass


def close_quietly(conn: Any) -> None:
    """Close a connection that may be lost already."""
    try:
        if conn is not None and conn.is_open:
            conn.close()
    except AMQP_ERRORS:
        pass


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "…"


class Link:
    """One pooled connection: a channel in confirm mode that publishes without waiting per message,
    and a channel for declarations, counts and dead-letter browsing (a channel error closes only it)."""

    def __init__(self, params: pika.URLParameters) -> None:
        self.conn = pika.BlockingConnection(params)
        self.used = time.monotonic()
        self._pub: Any = None
        self._admin: Any = None
        self._confirms = Confirms()

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
            self._pub, self._confirms = ch, Confirms()
        return self._pub

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        self._confirms.settle(method.delivery_tag, method.multiple, not isinstance(method, pika.spec.Basic.Nack))
        if not self._confirms.unconfirmed:
            self.conn.call_later(0, _noop)  # a ready event: process_data_events returns now

    def _on_return(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        self._confirms.returned.append((properties.headers, properties.message_id))

    def publish(self, frames: Sequence[Frame], timeout: float) -> tuple[list[int], list[Returned]]:
        """Publish frames, all mandatory, then wait once for every confirm. Return the indexes the
        server nacked and the (headers, message id) of returned messages."""
        ch = self._publisher()
        confirms = self._confirms
        confirms.start()
        impl = ch._impl
        for exchange, key, body, props in frames:
            confirms.sent()
            impl.basic_publish(exchange, key, body, props, mandatory=True)
        self._wait(lambda: not confirms.unconfirmed, timeout, f"confirms of {len(frames)} message(s)")
        self.used = time.monotonic()
        return confirms.outcome()

    def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerUnavailable(f"RabbitMQ sent no {what} within {timeout:g} s")
            self.conn.process_data_events(time_limit=min(left, 1.0))

    def close(self) -> None:
        close_quietly(self.conn)


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

    @contextmanager
    def link(self) -> Iterator[Link]:
        """A pooled connection for one operation; a broken one is dropped, not returned."""
        link = self.take()
        try:
            yield link
        except BaseException:
            link.close()
            raise
        self.give(link)

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
