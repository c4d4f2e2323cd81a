"""Embedded broker and result store in one SQLite file (`sqlite:///relative.db`, `sqlite:////abs.db`).

Guarantees: WAL mode, safe for many producer and worker processes on one machine; every
publish, ack, nack and dead-letter is one committed transaction, so a SIGKILL of any process
loses nothing committed. With the default `synchronous=NORMAL` a power loss or OS crash may roll
back the last transactions before a checkpoint; `?synchronous=full` makes each commit durable.
Non-guarantees: one machine only (SQLite over a network filesystem is not safe).

Round trips per message, amortised: publish 1 transaction per batch; fetch 1 read + 1
transaction per batch (claims up to `limit` rows with UPDATE … RETURNING); ack 1 transaction per
batch; results 1 transaction per batch. An idle consumer (and a waiting `get()`) sleeps on the
write-ahead log (inotify, sqlite_watch.py): any process's commit wakes it at once; otherwise one
cheap read every 0.25 s. Without inotify it polls every 25 ms.

Rows in `chute_messages` move through states READY(0) → LEASED(1) → deleted on ack, or back to
READY/DELAYED(2) on nack/expiry, or DEAD(3). `due` is the ETA of a delayed row and the lease
expiry of a leased row, so one index finds both what is due and what was abandoned.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import msgspec

from ..errors import BrokerError, NotAChuteDatabase, QueueFull, StorageFull
from ..results import ErrorInfo, ResultRecord, derive_record
from ..states import State
from .base import DeadLetter, Delivery, Features, Outgoing, QueueStats
from .shared import fan_out, idempotency_slot, ids_of, unrouted_key
from .sqlite_watch import IdleLooks, WalWatch
from .store import Store, WorkerInfo

SCHEMA_VERSION = 1
READY, LEASED, DELAYED, DEAD = 0, 1, 2, 3
_DERIVED = {READY: State.QUEUED, LEASED: State.STARTED, DELAYED: State.QUEUED, DEAD: State.DEAD}
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS chute_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chute_messages (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state INTEGER NOT NULL DEFAULT 0,
    due REAL NOT NULL DEFAULT 0,
    claim TEXT,
    deliveries INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL,
    reason TEXT,
    dead_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS chute_messages_id ON chute_messages (id);
CREATE INDEX IF NOT EXISTS chute_messages_ready
    ON chute_messages (queue, priority DESC, seq) WHERE state = 0;
CREATE INDEX IF NOT EXISTS chute_messages_leased ON chute_messages (due) WHERE state = 1;
CREATE INDEX IF NOT EXISTS chute_messages_delayed ON chute_messages (due) WHERE state = 2;
CREATE INDEX IF NOT EXISTS chute_messages_dead ON chute_messages (queue, dead_at) WHERE state = 3;
CREATE TABLE IF NOT EXISTS chute_results (
    task_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    queue TEXT NOT NULL DEFAULT '',
    value BLOB,
    codec TEXT NOT NULL DEFAULT 'json',
    error BLOB,
    attempt INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    expires_at REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chute_results_expiry ON chute_results (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS chute_results_cancelled ON chute_results (task_id) WHERE state = 'cancelled';
CREATE TABLE IF NOT EXISTS chute_starts
    (task_id TEXT NOT NULL, attempt INTEGER NOT NULL, n INTEGER NOT NULL, expires_at REAL NOT NULL,
     PRIMARY KEY (task_id, attempt)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chute_locks
    (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chute_joins
    (key TEXT NOT NULL, member TEXT NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (key, member)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chute_groups
    (group_name TEXT NOT NULL, pattern TEXT NOT NULL, declared_at REAL NOT NULL,
     PRIMARY KEY (group_name, pattern)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chute_buckets
    (key TEXT PRIMARY KEY, tokens REAL NOT NULL, at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chute_events (seq INTEGER PRIMARY KEY, at REAL NOT NULL, batch BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS chute_keys (key TEXT PRIMARY KEY, id TEXT NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chute_workers
    (id TEXT PRIMARY KEY, info BLOB NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID;
"""

def _boot_id() -> str | None:
    """This boot's id (Linux), so leases on the monotonic clock can tell a reboot reset it."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


_encode_error = msgspec.json.Encoder().encode
_decode_error = msgspec.json.Decoder(ErrorInfo).decode
_decode_worker = msgspec.json.Decoder(WorkerInfo).decode
_PICK_ONE = ("SELECT seq FROM chute_messages WHERE state = 0 AND queue = ? "
             "ORDER BY priority DESC, seq LIMIT ?")  # the head of one queue


class _Pool:
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
            raise _not_chute(self._path, exc) from None
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


def _close(pool: _Pool, watch: WalWatch) -> None:
    pool.close()
    watch.close()


def _not_chute(path: str, exc: Exception) -> NotAChuteDatabase:
    return NotAChuteDatabase(f"{path} is not a chute database ({exc}); "
                             "point the URL at a new file or at one chute created")


_INHERITED: list[sqlite3.Connection] = []  # connections a forked child must keep open and never use


class SQLiteBroker:
    """Queue and Store in one SQLite file, shared by every process on the machine."""

    features = Features(acks_with_results=True, derives_states=True)
    aio = None  # asyncio code calls it on a thread (a C library: it would block the loop)

    def __init__(self, path: str, *, synchronous: str = "normal", busy_timeout: float = 60.0,
                 url: str | None = None) -> None:
        if synchronous.lower() not in ("normal", "full"):
            raise ValueError(f"synchronous={synchronous!r}: use 'normal' or 'full'")
        self.path = path
        self.url = url or f"sqlite:///{path}"
        self._synchronous = synchronous.upper()
        self._busy_timeout = busy_timeout
        self._pool = _Pool(path, busy_timeout, self._synchronous)
        self._watch = WalWatch(f"{path}-wal")  # an idle fetch sleeps until some process commits
        self._looking = threading.local()  # per fetching thread: its IdleLooks
        self._finalizer = weakref.finalize(self, _close, self._pool, self._watch)
        self._wall: Callable[[], float] = time.time  # ETAs: "run at 9:00" is wall time
        boot = _boot_id()
        # Leases: CLOCK_MONOTONIC is one clock for every process of a boot, immune to wall-clock jumps;
        # where the boot cannot be identified, leases fall back to wall time.
        self._lease_clock: Callable[[], float] = time.monotonic if boot else time.time
        self._init_schema(boot)

    # -- connections ---------------------------------------------------------------------------
    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        """A connection of this process for the duration of one operation (a small pool)."""
        conn = self._pool.take()
        try:
            yield conn
        finally:
            self._pool.give(conn)

    def _not_chute(self, exc: Exception) -> NotAChuteDatabase:
        return _not_chute(self.path, exc)

    def _init_schema(self, boot: str | None) -> None:
        if os.path.isdir(self.path):
            raise NotAChuteDatabase(f"{self.path} is a directory, not a database file")
        with self._conn() as conn:
            self._init_tables(conn, boot)

    def _init_tables(self, conn: sqlite3.Connection, boot: str | None) -> None:
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "chute_meta" not in tables:
                raise NotAChuteDatabase(
                    f"{self.path} is an SQLite database of another application (tables: "
                    f"{', '.join(sorted(tables)[:5])}); chute will not write into it; use a file of its own")
            mode = self._switch_to_wal(conn)
            if str(mode).lower() != "wal":
                raise BrokerError(f"{self.path}: could not switch to WAL mode (got {mode})")
            with self._transaction(conn) as c:
                for stmt in SCHEMA.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                c.execute("INSERT OR IGNORE INTO chute_meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                found = int(c.execute("SELECT value FROM chute_meta WHERE key = 'schema'").fetchone()[0])
                c.execute("DROP INDEX IF EXISTS chute_messages_timed")
                clock = f"monotonic:{boot}" if boot else "wall"
                row = c.execute("SELECT value FROM chute_meta WHERE key = 'lease_clock'").fetchone()
                if row is None or row[0] != clock:  # a reboot (or another clock): every old lease has ended
                    c.execute("UPDATE chute_messages SET due = 0 WHERE state = 1")
                    c.execute("INSERT OR REPLACE INTO chute_meta VALUES ('lease_clock', ?)", (clock,))
            if found > SCHEMA_VERSION:
                raise NotAChuteDatabase(f"{self.path} uses chute schema {found}; this chute knows up to "
                                        f"{SCHEMA_VERSION}: upgrade chute")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):  # held past the busy timeout: not a verdict on the file
                raise self._error(exc) from None
            raise self._not_chute(exc) from None
        except sqlite3.DatabaseError as exc:
            raise self._not_chute(exc) from None

    def _switch_to_wal(self, conn: sqlite3.Connection) -> str:
        """PRAGMA journal_mode = WAL, retried within the busy timeout: on a new file the switch takes
        a lock that does not wait on the timeout, and another process may be creating the same file
        at this very moment (a worker and `chute send` started together)."""
        deadline = time.monotonic() + self._busy_timeout
        pause = 0.001
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE so writers queue on the busy timeout, never deadlock."""
        with self._conn() as conn, self._transaction(conn) as c:
            yield c

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._error(exc) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise self._error(exc) from exc
            raise

    def _error(self, exc: sqlite3.Error) -> BrokerError:
        text = str(exc)
        if "full" in text:
            return StorageFull(f"{self.path}: {text}; nothing was written; free space and try again")
        return BrokerError(f"{self.path}: {text}")

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            with self._conn() as conn:
                return fn(conn)
        except sqlite3.OperationalError as exc:
            raise self._error(exc) from exc

    # -- producing -----------------------------------------------------------------------------
    def publish(self, messages: Sequence[Outgoing]) -> list[str]:
        now = self._wall()
        if len(messages) == 1 and messages[0].idempotency_key is None and messages[0].topic is None \
                and messages[0].max_length is None:  # the one-by-one fast path
            m = messages[0]
            delayed = m.eta is not None and m.eta > now
            with self._write() as c:
                c.execute("INSERT OR IGNORE INTO chute_messages (id, queue, priority, state, due, body) "
                          "VALUES (?, ?, ?, ?, ?, ?)",
                          (m.id, m.queue, m.priority, DELAYED if delayed else READY, m.eta if delayed else 0, m.body))
            return [m.id]
        ids: list[str] = []
        rows: list[tuple[Any, ...]] = []
        with self._write() as c:
            subs = c.execute("SELECT group_name, pattern FROM chute_groups").fetchall() \
                if any(m.topic is not None for m in messages) else []
            stored, plan, unrouted = fan_out(messages, subs)  # events: a copy per group, in this transaction
            for topic in unrouted:
                c.execute("INSERT INTO chute_meta VALUES (?, '1') ON CONFLICT (key) DO UPDATE "
                          "SET value = CAST(value AS INTEGER) + 1", (unrouted_key(topic),))
            for m in stored:
                if m.idempotency_key is not None:
                    slot = idempotency_slot(m.queue, m.idempotency_key)
                    held = c.execute("SELECT id FROM chute_keys WHERE key = ? AND expires_at > ?",
                                     (slot, now)).fetchone()
                    if held is not None:
                        ids.append(held[0])
                        continue
                    c.execute("INSERT OR REPLACE INTO chute_keys VALUES (?, ?, ?)",
                              (slot, m.id, now + m.idempotency_window))
                delayed = m.eta is not None and m.eta > now
                rows.append((m.id, m.queue, m.priority, DELAYED if delayed else READY,
                             m.eta if delayed else 0, m.body))
                ids.append(m.id)
            self._enforce_limits(c, messages, rows, before=True)
            c.executemany("INSERT OR IGNORE INTO chute_messages (id, queue, priority, state, due, body) "
                          "VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._enforce_limits(c, messages, rows, before=False)
        return ids_of(plan, ids)

    @staticmethod
    def _enforce_limits(c: sqlite3.Connection, messages: Sequence[Outgoing], rows: list[tuple[Any, ...]],
                        before: bool) -> None:
        """Before inserting, refuse what would overflow a "reject" queue; after, trim "drop_oldest" ones."""
        limits = {m.queue: (m.max_length, m.on_full) for m in messages if m.max_length is not None}
        if not limits:
            return
        adding: dict[str, int] = {}
        for row in rows:
            adding[row[1]] = adding.get(row[1], 0) + 1
        for queue, (limit, on_full) in limits.items():
            assert limit is not None
            if (on_full == "drop_oldest") == before:
                continue
            waiting = c.execute("SELECT count(*) FROM (SELECT 1 FROM chute_messages "
                                "WHERE queue = ? AND state IN (0, 2) LIMIT ?)",
                                (queue, limit + adding.get(queue, 0) + 1)).fetchone()[0]
            excess = waiting + (adding.get(queue, 0) if before else 0) - limit
            if excess <= 0:
                continue
            if on_full != "drop_oldest":
                raise QueueFull(f"queue {queue!r} is full: {waiting} waiting, limit {limit} "
                                f"(on_full={on_full!r}); nothing was enqueued")
            dropped = c.execute("DELETE FROM chute_messages WHERE seq IN (SELECT seq FROM chute_messages "
                                "WHERE queue = ? AND state IN (0, 2) ORDER BY seq LIMIT ?)", (queue, excess)).rowcount
            c.execute("INSERT INTO chute_meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                      "SET value = CAST(value AS INTEGER) + excluded.value", (f"chute.dropped:{queue}", str(dropped)))

    # -- consuming -----------------------------------------------------------------------------
    def fetch(self, queues: Sequence[str], limit: int, lease: float, timeout: float) -> list[Delivery]:
        """Claim up to `limit`; an empty queue is looked at again on a short backoff for a moment
        after each commit, and otherwise sleeps until some process writes the log (see sqlite_watch)."""
        deadline = time.monotonic() + timeout
        marks = ",".join("?" * len(queues))
        probe = (f"SELECT (SELECT 1 FROM chute_messages WHERE state = 0 AND queue IN ({marks}) LIMIT 1), "
                 "(SELECT min(due) FROM chute_messages WHERE state = 1), "
                 "(SELECT min(due) FROM chute_messages WHERE state = 2)")
        looks = getattr(self._looking, "looks", None)
        if looks is None:
            looks = self._looking.looks = IdleLooks()
        while True:
            wall, mono = self._wall(), self._lease_clock()
            ready, lease_end, eta = self._read(lambda c: c.execute(probe, tuple(queues)).fetchone())
            wait = min(math.inf if lease_end is None else lease_end - mono, math.inf if eta is None else eta - wall)
            if ready or wait <= 0:
                got = self._claim(queues, limit, lease, wall, mono)
                if got:
                    looks.found()
                    return got
            looks.missed()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            looks.sleep(self._watch, min(remaining, wait))

    def _claim(self, queues: Sequence[str], limit: int, lease: float, wall: float, mono: float) -> list[Delivery]:
        claim = os.urandom(8).hex()
        params: tuple[str | int, ...]
        if len(queues) == 1:
            pick, params = _PICK_ONE, (queues[0], limit)
        else:  # each arm walks its queue's index in order; only the arms' heads are merged
            arm = "SELECT * FROM (SELECT seq, priority FROM chute_messages WHERE state = 0 AND queue = ? " \
                  "ORDER BY priority DESC, seq LIMIT ?)"
            pick = f"SELECT seq FROM ({' UNION ALL '.join([arm] * len(queues))}) ORDER BY priority DESC, seq LIMIT ?"
            params = (*[x for q in queues for x in (q, limit)], limit)
        with self._write() as c:
            c.execute("UPDATE chute_messages SET state = 0, claim = NULL WHERE state = 1 AND due <= ?", (mono,))
            c.execute("UPDATE chute_messages SET state = 0 WHERE state = 2 AND due <= ?", (wall,))
            rows = c.execute(
                "UPDATE chute_messages SET state = 1, claim = ?, due = ?, deliveries = deliveries + 1 "
                f"WHERE seq IN ({pick}) RETURNING priority, seq, id, queue, body, deliveries",
                (claim, mono + lease, *params)).fetchall()
        rows.sort(key=lambda r: (-r[0], r[1]))
        return [Delivery(r[3], r[2], r[4], claim, r[5], r[1]) for r in rows]

    def ack(self, deliveries: Sequence[Delivery], results: Sequence[ResultRecord] = ()) -> int:
        """Acknowledge; with `results`, record them in the same transaction (one commit per batch)."""
        if not deliveries and not results:
            return 0
        with self._write() as c:
            if results:
                self._store(c, results)
            cur = c.executemany("DELETE FROM chute_messages WHERE seq = ? AND claim = ?",
                                [(d.tag, d.claim) for d in deliveries])
            return cur.rowcount

    def nack(self, delivery: Delivery, body: bytes, retry_at: float) -> bool:
        delayed = retry_at > self._wall()
        with self._write() as c:
            cur = c.execute("UPDATE chute_messages SET state = ?, due = ?, claim = NULL, deliveries = 0, body = ? "
                            "WHERE seq = ? AND claim = ?",
                            (DELAYED if delayed else READY, retry_at if delayed else 0, body,
                             delivery.tag, delivery.claim))
            return cur.rowcount == 1

    def release(self, deliveries: Sequence[Delivery]) -> int:
        if not deliveries:
            return 0
        with self._write() as c:
            cur = c.executemany("UPDATE chute_messages SET state = 0, due = 0, claim = NULL, "
                                "deliveries = max(deliveries - 1, 0) WHERE seq = ? AND claim = ?",
                                [(d.tag, d.claim) for d in deliveries])
            return cur.rowcount

    def dead_letter(self, delivery: Delivery, reason: str, body: bytes | None = None) -> bool:
        with self._write() as c:
            cur = c.execute("UPDATE chute_messages SET state = 3, claim = NULL, due = 0, reason = ?, dead_at = ?, "
                            "body = coalesce(?, body) WHERE seq = ? AND claim = ?",
                            (reason, time.time(), body, delivery.tag, delivery.claim))
            return cur.rowcount == 1

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        if not deliveries:
            return []
        due = self._lease_clock() + lease
        with self._write() as c:
            return [c.execute("UPDATE chute_messages SET due = ? WHERE seq = ? AND claim = ? AND state = 1",
                              (due, d.tag, d.claim)).rowcount == 1 for d in deliveries]

    # -- operating -----------------------------------------------------------------------------
    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        wall, mono = self._wall(), self._lease_clock()
        rows = self._read(lambda c: c.execute(  # a due delay or an expired lease is ready work
            "SELECT queue, CASE WHEN (state = 1 AND due <= ?) OR (state = 2 AND due <= ?) THEN 0 ELSE state END, "
            "count(*) FROM chute_messages GROUP BY 1, 2", (mono, wall)).fetchall())
        table: dict[str, QueueStats] = {q: QueueStats(q) for q in (queues or ())}
        for queue, state, count in rows:
            if queues is not None and queue not in table:
                continue
            s = table.setdefault(queue, QueueStats(queue))
            if state == READY:
                s.ready += count
            elif state == LEASED:
                s.in_flight += count
            elif state == DELAYED:
                s.delayed += count
            else:
                s.dead += count
        return [table[q] for q in sorted(table)]

    def _dead_filter(self, queue: str | None, ids: Sequence[str] | None) -> tuple[str, list[Any]]:
        sql, params = "state = 3", []
        if queue is not None:
            sql += " AND queue = ?"
            params.append(queue)
        if ids is not None:
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            params.extend(ids)
        return sql, params

    def dead_letters(self, queue: str | None = None, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        where, params = self._dead_filter(queue, None)
        rows = self._read(lambda c: c.execute(
            f"SELECT queue, id, body, reason, dead_at FROM chute_messages WHERE {where} "
            "ORDER BY dead_at, seq LIMIT ? OFFSET ?", (*params, limit, offset)).fetchall())
        return [DeadLetter(*r) for r in rows]

    def replay(self, queue: str | None = None, ids: Sequence[str] | None = None) -> int:
        where, params = self._dead_filter(queue, ids)
        with self._write() as c:
            return c.execute(f"UPDATE chute_messages SET state = 0, due = 0, deliveries = 0, reason = NULL, "
                             f"dead_at = NULL WHERE {where}", params).rowcount

    def purge_dead(self, queue: str | None = None, ids: Sequence[str] | None = None) -> int:
        where, params = self._dead_filter(queue, ids)
        with self._write() as c:
            return c.execute(f"DELETE FROM chute_messages WHERE {where}", params).rowcount

    def declare_group(self, group: str, patterns: Sequence[str]) -> None:
        with self._write() as c:
            c.executemany("INSERT OR IGNORE INTO chute_groups VALUES (?, ?, ?)",
                          [(group, p, time.time()) for p in patterns])

    def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        with self._write() as c:
            c.execute("INSERT OR REPLACE INTO chute_workers VALUES (?, ?, ?)",
                      (worker.id, msgspec.json.encode(worker), time.time() + ttl))

    def worker_gone(self, worker_id: str) -> None:
        with self._write() as c:
            c.execute("DELETE FROM chute_workers WHERE id = ?", (worker_id,))

    def workers(self) -> list[WorkerInfo]:
        rows = self._read(lambda c: c.execute("SELECT info FROM chute_workers WHERE expires_at > ? ORDER BY id",
                                              (time.time(),)).fetchall())
        return [_decode_worker(r[0]) for r in rows]

    def record_events(self, batch: bytes, retention: float) -> None:
        now = time.time()
        with self._write() as c:
            c.execute("INSERT INTO chute_events (at, batch) VALUES (?, ?)", (now, batch))
            c.execute("DELETE FROM chute_events WHERE seq < (SELECT coalesce(min(seq), 0) FROM chute_events "
                      "WHERE at >= ?)", (now - retention,))

    def read_events(self, after: int = 0, limit: int = 100) -> list[tuple[int, bytes]]:
        rows = self._read(lambda c: c.execute("SELECT seq, batch FROM chute_events WHERE seq > ? ORDER BY seq LIMIT ?",
                                              (after, limit)).fetchall())
        return [(int(r[0]), bytes(r[1])) for r in rows]

    def bind(self, store: Store) -> None:
        pass  # it keeps its own bookkeeping

    def beat(self, worker_id: str) -> tuple[dict[str, int], dict[str, int]]:
        return {}, {}  # counted in `stats`

    def stopped(self, worker_id: str) -> None:
        pass  # it prefetches nothing

    def close(self) -> None:
        self._finalizer()

    # -- Store ---------------------------------------------------------------------------------
    def started(self, records: Sequence[ResultRecord]) -> set[str]:
        return self.cancelled([r.task_id for r in records])  # STARTED itself is derived from the lease

    def store(self, records: Sequence[ResultRecord]) -> None:
        if not records:
            return
        with self._write() as c:
            self._store(c, records)

    def queued(self, records: Sequence[ResultRecord]) -> None:
        if not records:
            return
        now = time.time()
        with self._write() as c:  # an expired record counts as none
            c.executemany("DELETE FROM chute_results WHERE task_id = ? AND expires_at <= ?",
                          [(r.task_id, now) for r in records])
            c.executemany("INSERT OR IGNORE INTO chute_results (task_id, state, name, queue, updated_at, expires_at) "
                          "VALUES (?, 'queued', ?, ?, ?, ?)",
                          [(r.task_id, r.name, r.queue, r.updated_at, r.expires_at) for r in records])

    def forget_queued(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            with self._write() as c:
                c.executemany("DELETE FROM chute_results WHERE task_id = ? AND state = 'queued'",
                              [(i,) for i in task_ids])

    @staticmethod
    def _store(c: sqlite3.Connection, records: Sequence[ResultRecord]) -> None:
        def rows(rs: Sequence[ResultRecord]) -> list[tuple[Any, ...]]:
            return [(r.task_id, r.state.value, r.name, r.queue, r.value, r.codec,
                     None if r.error is None else _encode_error(r.error), r.attempt, r.updated_at, r.expires_at)
                    for r in rs]

        starts = [r for r in records if r.state is State.STARTED]
        if starts:  # a start lands over nothing, QUEUED, RETRYING or STARTED: never over a cancellation or an outcome
            c.executemany("INSERT INTO chute_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (task_id) DO "
                          "UPDATE SET state = excluded.state, name = excluded.name, queue = excluded.queue, "
                          "attempt = excluded.attempt, updated_at = excluded.updated_at, "
                          "expires_at = excluded.expires_at WHERE state IN ('queued', 'retrying', 'started')",
                          rows(starts))
            records = [r for r in records if r.state is not State.STARTED]
        c.executemany("INSERT OR REPLACE INTO chute_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows(records))

    def get(self, task_id: str) -> ResultRecord | None:
        def read(c: sqlite3.Connection) -> tuple[Any, Any]:
            msg = c.execute("SELECT state, queue FROM chute_messages WHERE id = ?", (task_id,)).fetchone()
            res = c.execute("SELECT * FROM chute_results WHERE task_id = ?", (task_id,)).fetchone()
            return msg, res

        msg, row = self._read(read)
        rec = None
        if row is not None and (row[9] is None or row[9] > time.time()):
            rec = ResultRecord(row[0], State(row[1]), row[2], row[3], row[4], row[5],
                               None if row[6] is None else _decode_error(row[6]), row[7], row[8], row[9])
        if msg is None:
            return rec
        return derive_record(task_id, rec, msg[1], _DERIVED[msg[0]])

    def wait(self, task_id: str, timeout: float | None) -> ResultRecord | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        looks = IdleLooks()
        looks.found()  # a result is often moments away: start by looking closely
        while True:
            rec = self.get(task_id)
            if rec is not None and rec.state.finished:
                return rec
            looks.missed()
            remaining = math.inf if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return rec
            looks.sleep(self._watch, remaining)

    def cancel(self, task_id: str, ttl: float) -> State:
        now = time.time()
        with self._write() as c:
            row = c.execute("INSERT INTO chute_results (task_id, state, updated_at, expires_at) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT (task_id) DO UPDATE SET state = excluded.state, "
                            "updated_at = excluded.updated_at, expires_at = excluded.expires_at "
                            "WHERE state NOT IN ('succeeded', 'failed', 'cancelled') RETURNING state",
                            (task_id, State.CANCELLED.value, now, now + ttl)).fetchone()
            if row is not None:
                return State.CANCELLED
            return State(c.execute("SELECT state FROM chute_results WHERE task_id = ?", (task_id,)).fetchone()[0])

    def cancelled(self, task_ids: Sequence[str]) -> set[str]:
        if not task_ids:
            return set()
        ids = list(task_ids)
        rows = self._read(lambda c: c.execute(  # the partial index is empty unless something was cancelled
            "SELECT task_id FROM chute_results INDEXED BY chute_results_cancelled "
            f"WHERE state = 'cancelled' AND task_id IN ({','.join('?' * len(ids))})", ids).fetchall())
        return {r[0] for r in rows}

    def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        now = time.time()
        with self._write() as c:
            row = c.execute("INSERT INTO chute_locks VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                            "owner = excluded.owner, expires_at = excluded.expires_at "
                            "WHERE chute_locks.owner = excluded.owner OR chute_locks.expires_at <= ? RETURNING owner",
                            (name, owner, now + ttl, now)).fetchone()
        return row is not None

    def release_lease(self, name: str, owner: str) -> None:
        with self._write() as c:
            c.execute("DELETE FROM chute_locks WHERE name = ? AND owner = ?", (name, owner))

    def get_meta(self, key: str) -> str | None:
        row = self._read(lambda c: c.execute("SELECT value FROM chute_meta WHERE key = ?", (key,)).fetchone())
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        if key == "schema":
            raise ValueError("the schema version is not metadata to overwrite")
        with self._write() as c:
            c.execute("INSERT OR REPLACE INTO chute_meta VALUES (?, ?)", (key, value))

    def add_meta(self, key: str, n: int) -> int:
        if key == "schema":
            raise ValueError("the schema version is not metadata to overwrite")
        with self._write() as c:
            return int(c.execute("INSERT INTO chute_meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                                 "SET value = CAST(value AS INTEGER) + excluded.value RETURNING value",
                                 (key, str(n))).fetchone()[0])

    def join(self, key: str, member: str, ttl: float) -> int:
        with self._write() as c:
            c.execute("INSERT OR IGNORE INTO chute_joins VALUES (?, ?, ?)", (key, member, time.time() + ttl))
            return int(c.execute("SELECT count(*) FROM chute_joins WHERE key = ?", (key,)).fetchone()[0])

    def take_token(self, key: str, rate: float, burst: float) -> float:
        with self._write() as c:
            now = time.time()
            row = c.execute("SELECT tokens, at FROM chute_buckets WHERE key = ?", (key,)).fetchone()
            tokens = burst if row is None else min(burst, row[0] + max(0.0, now - row[1]) * rate)
            took = tokens >= 1
            c.execute("INSERT OR REPLACE INTO chute_buckets VALUES (?, ?, ?)",
                      (key, tokens - 1 if took else tokens, now))
        return 0.0 if took else (1 - tokens) / rate

    def count_start(self, task_id: str, attempt: int, ttl: float) -> int:
        with self._write() as c:
            row = c.execute("INSERT INTO chute_starts VALUES (?, ?, 1, ?) ON CONFLICT (task_id, attempt) "
                            "DO UPDATE SET n = n + 1 RETURNING n", (task_id, attempt, time.time() + ttl)).fetchone()
            return int(row[0])

    def purge_expired(self) -> int:
        now = time.time()
        with self._write() as c:
            c.execute("DELETE FROM chute_starts WHERE expires_at <= ?", (now,))
            c.execute("DELETE FROM chute_joins WHERE expires_at <= ?", (now,))
            n = c.execute("DELETE FROM chute_results WHERE expires_at <= ?", (now,)).rowcount
            c.execute("DELETE FROM chute_keys WHERE expires_at <= ?", (now,))
            c.execute("DELETE FROM chute_workers WHERE expires_at <= ?", (now,))
        return n
