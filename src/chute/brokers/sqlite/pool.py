"""Connections to one SQLite file, shared by a process's threads, and the transactions made on them.

Every operation of the broker takes a connection for its duration and gives it back; every write is
one `BEGIN IMMEDIATE` transaction; a driver error leaves as BrokerError (StorageFull for a full disk).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from ...errors import BrokerError, NotAChuteDatabase, StorageFull
from .watch import WalWatch

T = TypeVar("T")

_INHERITED: list[sqlite3.Connection] = []  # connections a forked child must keep open and never use


def not_chute(path: str, exc: Exception) -> NotAChuteDatabase:
    """The file at `path` is no SQLite database chute can use (the driver said why)."""
    return NotAChuteDatabase(f"{path} is not a chute database ({exc}); "
                             "point the URL at a new file or at one chute created")


def translate(exc: sqlite3.Error, where: str) -> BrokerError:
    """A driver error as chute's: StorageFull when the disk (or the file's size limit) is full."""
    text = str(exc)
    if "full" in text:
        return StorageFull(f"{where}: {text}; nothing was written; free space and try again")
    return BrokerError(f"{where}: {text}")


class Pool:
    """Idle connections of one process, reused by whichever thread needs one next.

    A pool, not one connection per thread: a web server's short-lived request threads would
    otherwise each leave a connection (and its file descriptors) open until the broker closes.
    After a fork the parent's connections are never touched (SQLite forbids using them in a child).
    """

    MAX_IDLE = 32

    def __init__(self, path: str, busy_timeout: float, synchronous: str) -> None:
        self._path, self._busy_timeout, self._synchronous = path, busy_timeout, synchronous
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False

    def take(self) -> sqlite3.Connection:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's connections are not ours to use or close
                _INHERITED.extend(self._idle)
                self._idle, self._pid, self._closed = [], os.getpid(), False
            if self._idle:
                return self._idle.pop()
        return self._open()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise not_chute(self._path, exc) from None
        return conn

    def give(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed and self._pid == os.getpid() and len(self._idle) < self.MAX_IDLE \
                    and not conn.in_transaction:
                self._idle.append(conn)
                return
        if self._pid == os.getpid():
            conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
            mine = self._pid == os.getpid()
        for conn in idle if mine else ():
            try:
                conn.close()
            except sqlite3.Error:
                pass


@contextmanager
def transaction(conn: sqlite3.Connection, where: str) -> Iterator[sqlite3.Connection]:
    """One write transaction; BEGIN IMMEDIATE so writers queue on the busy timeout, never deadlock."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise translate(exc, where) from exc
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.OperationalError):
            raise translate(exc, where) from exc
        raise


def finalize(pool: Pool, watch: WalWatch) -> None:
    """What the broker's finalizer runs: its idle connections and its log watch go."""
    pool.close()
    watch.close()


class Database:
    """What the store half and the queue half of the broker both stand on: one file, its pool of
    connections, its log watch and its two clocks (set by `SQLiteBroker.__init__`)."""

    path: str
    url: str
    _pool: Pool
    _watch: WalWatch  # an idle fetch or wait sleeps until some process commits
    _wall: Callable[[], float]  # ETAs: "run at 9:00" is wall time
    _lease_clock: Callable[[], float]  # leases: monotonic where the boot is known (schema.boot_id)

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        """A connection of this process for the duration of one operation (a small pool)."""
        conn = self._pool.take()
        try:
            yield conn
        finally:
            self._pool.give(conn)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on a pooled connection."""
        with self._conn() as conn, transaction(conn, self.path) as c:
            yield c

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` on a pooled connection, outside any transaction."""
        try:
            with self._conn() as conn:
                return fn(conn)
        except sqlite3.OperationalError as exc:
            raise translate(exc, self.path) from exc
