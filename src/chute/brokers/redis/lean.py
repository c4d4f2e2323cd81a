"""A lean command path for the Redis broker's hottest calls: a one-by-one `delay()`, a worker's fetch,
cancellation check and settle (ack + results) of each batch.

redis-py's general path (dispatch, pool checkout, observability hooks, retry wrapper, its own
connection's send and parse) costs about as much client time as the server's round trip. Measured
on the project's 2-core machine, 5,000 EVALSHA calls of the enqueue script each (benchmarks in the
commit that added this): `Redis.evalsha` 8,700-14,000/s, a redis-py Connection used directly 40 µs
a call, a socket with hiredis's packer and reader 28 µs (12.5 µs of CPU instead of 19.6).

So this keeps a few sockets of its own for plain TCP URLs (TLS and Unix sockets keep redis-py's
path), authenticates and selects the database like redis-py, and sends packed commands on them.
A command that surely did not run (no connection, or NOSCRIPT after the server forgot its
scripts) returns None, and the caller takes the general path, which retries, reconnects and
reloads scripts. Any other error reply raises BrokerError: a script may have stopped half-way,
and running it again could repeat its writes. A connection lost after sending raises
BrokerUnavailable: the command may have run, and sending it again could store the message twice.
"""

from __future__ import annotations

import os
import select
import socket
import time
import weakref
from collections.abc import Sequence
from typing import Any

from redis.connection import Connection, ConnectionPool

from ...errors import BrokerError, BrokerUnavailable

try:
    import hiredis
except ImportError:  # pragma: no cover - the redis extra installs it
    hiredis = None  # type: ignore[assignment]


SPIN = 0.0002  # seconds a call keeps asking for its reply before it sleeps until the socket is readable
# Error replies of a server that refused the command for now without running it (loading its data
# after a restart, another script still running, a replica without its primary): an outage.
NOT_NOW = ("LOADING ", "BUSY ", "MASTERDOWN ", "TRYAGAIN ")


class _Link:
    """One non-blocking socket and its reply reader.

    A reply is waited for by asking the socket again for up to SPIN before sleeping in poll(): a
    thread that sleeps costs a wake-up (a halted virtual CPU, a context switch) that on the
    project's VM was most of a loopback round trip (PING: 73-87 µs sleeping, 26-29 µs asking
    again, and less CPU than the sleep's syscalls). A slower reply still sleeps, after SPIN.
    """

    __slots__ = ("poller", "reader", "sock", "timeout")

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        sock.setblocking(False)
        self.sock, self.timeout = sock, timeout
        self.reader = hiredis.Reader()
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)

    def call(self, packed: bytes, replies: int = 1) -> list[Any]:
        """Send `packed` (one command or several) and return its `replies` replies."""
        self.send(packed)
        return [self.read() for _ in range(replies)]

    def send(self, packed: bytes) -> None:
        try:
            sent = self.sock.send(packed)
        except BlockingIOError:
            sent = 0
        if sent < len(packed):  # the send buffer is full (a large body): the rest as it drains
            view, sock = memoryview(packed)[sent:], self.sock
            while view:
                try:
                    view = view[sock.send(view):]
                except BlockingIOError:
                    if not select.select([], [sock], [], self.timeout)[1]:
                        raise TimeoutError("timed out sending") from None

    def read(self) -> Any:
        reader, sock = self.reader, self.sock
        spin_until = 0.0
        while True:
            reply = reader.gets()
            if reply is not False:
                return reply
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                now = time.perf_counter()
                if not spin_until:
                    spin_until = now + SPIN
                elif now >= spin_until and not self.poller.poll(self.timeout * 1000):
                    raise TimeoutError("timed out waiting for a reply") from None
                continue
            if not chunk:
                raise _Closed("connection closed by the server")
            reader.feed(chunk)


class _Closed(ConnectionError):
    """The server closed the connection."""


class FastCalls:
    """Idle sockets to the server `pool` connects to, reused by whichever thread calls next.

    The idle list is taken from and given back to without a lock (list pop and append are atomic),
    and a forked child drops its parent's sockets once, at the fork, not by comparing pids per call.
    """

    MAX_IDLE = 16

    def __init__(self, pool: ConnectionPool, url: str) -> None:
        kw = pool.connection_kwargs
        self.enabled = hiredis is not None and pool.connection_class is Connection and "host" in kw
        self._url = url
        self._address = (kw.get("host", "localhost"), int(kw.get("port", 6379)))
        self._auth = [x for x in (kw.get("username"), kw.get("password")) if x is not None]
        self._db = int(kw.get("db") or 0)
        self._connect_timeout = kw.get("socket_connect_timeout") or 2.0
        self._timeout = kw.get("socket_timeout") or 3.0
        self._idle: list[_Link] = []
        _open.add(self)

    def call(self, *args: Any) -> Any | None:
        """Send one command and return its reply; None if it did not run (use the general path)."""
        if not self.enabled:
            return None
        try:
            packed = hiredis.pack_command(args)
        except (ValueError, TypeError):
            return None
        return self.call_packed(packed)

    def call_packed(self, packed: bytes) -> Any | None:
        """`call` for a command already packed (RESP): its reply, or None if it did not run."""
        replies = self._run(packed, 1)
        return None if replies is None else replies[0]

    def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any] | None:
        """Send commands in one write and return their replies; None if they did not run (no socket, or
        NOSCRIPT: the caller takes the general path, which must be safe to repeat)."""
        if not commands:
            return None
        try:
            packed = b"".join([hiredis.pack_command(tuple(c)) for c in commands])
        except (ValueError, TypeError):
            return None
        return self._run(packed, len(commands))

    def _run(self, packed: bytes, replies: int) -> list[Any] | None:
        """Send `packed` on an idle (or new) link and read its `replies` replies; None if it did not run."""
        if not self.enabled:
            return None
        link, reused = self._take()
        if link is None:
            return None
        try:
            got = link.call(packed, replies)
        except OSError as exc:
            self._lost(link, reused, exc)
            return None
        self._give(link)
        errors = [r for r in got if isinstance(r, hiredis.ReplyError)]
        if errors:
            self._raise_unless_noscript(errors)
            return None
        return got

    def _raise_unless_noscript(self, errors: list[Any]) -> None:
        """Error replies: fine (the caller takes the general path) if all are NOSCRIPT, the script never
        ran; any other may come from a script that stopped half-way, and running it again could
        repeat its writes: raise it."""
        other = [str(e) for e in errors if not str(e).startswith("NOSCRIPT")]
        if not other:
            return
        if other[0].startswith(NOT_NOW):
            raise BrokerUnavailable(f"Redis at {self._url} cannot take commands now ({other[0]}); nothing was "
                                    "done, try again when it is back")
        raise BrokerError(f"Redis at {self._url}: {other[0]}")

    def _take(self) -> tuple[_Link | None, bool]:
        """An idle link (reused: True) or a new one; (None, False) if none can be had."""
        try:
            return self._idle.pop(), True
        except IndexError:
            pass
        try:
            return self._connect(), False
        except (OSError, ValueError, TypeError):
            return None, False

    def _lost(self, link: _Link, reused: bool, exc: OSError) -> None:
        """A call failed on `link`: close it; return quietly only if the command surely never ran."""
        link.sock.close()
        if isinstance(exc, (ConnectionResetError, BrokenPipeError, _Closed)):
            if reused:  # an idle socket the server had dropped (a restart, its idle timeout): it never ran
                return
            raise BrokerUnavailable(f"Redis at {self._url}: the connection was reset during a call; it may or "
                                    "may not have been carried out") from None
        # a timeout: the server may have run it
        raise BrokerUnavailable(f"Redis at {self._url}: no reply within {self._timeout:g} s ({exc}); the call "
                                "may or may not have been carried out") from None

    def _connect(self) -> _Link:
        sock = socket.create_connection(self._address, timeout=self._connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(sock, self._timeout)
            hello = ([("AUTH", *self._auth)] if self._auth else []) + ([("SELECT", self._db)] if self._db else [])
            for command in hello:
                if isinstance(link.call(hiredis.pack_command(command))[0], hiredis.ReplyError):
                    raise OSError(f"{command[0]} refused")
            return link
        except BaseException:
            sock.close()
            raise

    def _give(self, link: _Link) -> None:
        idle = self._idle
        if len(idle) < self.MAX_IDLE:
            idle.append(link)
        else:
            link.sock.close()

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for link in idle:
            link.sock.close()

    def _forget_after_fork(self) -> None:
        self._idle = []  # the parent's sockets: never read them here (the parent may be mid-call)


_open: weakref.WeakSet[FastCalls] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for calls in list(_open):
        calls._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
