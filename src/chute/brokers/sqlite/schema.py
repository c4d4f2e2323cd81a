"""The SQLite broker's tables and their version, and the checks that refuse a file chute did not make.

Rows in `chute_messages` move through states READY(0) → LEASED(1) → deleted on ack, or back to
READY/DELAYED(2) on nack/expiry, or DEAD(3). `due` is the ETA of a delayed row and the lease
expiry of a leased row, so one index finds both what is due and what was abandoned.
"""

from __future__ import annotations

import os
import sqlite3
import time

from ...errors import BrokerError, NotAChuteDatabase
from ...states import State
from .pool import Pool, not_chute, transaction, translate

SCHEMA_VERSION = 1
READY, LEASED, DELAYED, DEAD = 0, 1, 2, 3
# a task's state while its message is in the file: derived from the row, never written
DERIVED = {READY: State.QUEUED, LEASED: State.STARTED, DELAYED: State.QUEUED, DEAD: State.DEAD}

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


def boot_id() -> str | None:
    """This boot's id (Linux), so leases on the monotonic clock can tell a reboot reset it."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def prepare(pool: Pool, path: str, busy_timeout: float, boot: str | None) -> None:
    """Create the tables, or check them: refuse a directory, another application's database or a newer
    chute's; switch to WAL; end every lease taken before a reboot (or on another clock)."""
    if os.path.isdir(path):
        raise NotAChuteDatabase(f"{path} is a directory, not a database file")
    conn = pool.take()
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "chute_meta" not in tables:
            raise NotAChuteDatabase(
                f"{path} is an SQLite database of another application (tables: "
                f"{', '.join(sorted(tables)[:5])}); chute will not write into it; use a file of its own")
        mode = _switch_to_wal(conn, busy_timeout)
        if str(mode).lower() != "wal":
            raise BrokerError(f"{path}: could not switch to WAL mode (got {mode})")
        with transaction(conn, path) as c:
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
            raise NotAChuteDatabase(f"{path} uses chute schema {found}; this chute knows up to "
                                    f"{SCHEMA_VERSION}: upgrade chute")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):  # held past the busy timeout: not a verdict on the file
            raise translate(exc, path) from None
        raise not_chute(path, exc) from None
    except sqlite3.DatabaseError as exc:
        raise not_chute(path, exc) from None
    finally:
        pool.give(conn)


def _switch_to_wal(conn: sqlite3.Connection, busy_timeout: float) -> str:
    """PRAGMA journal_mode = WAL, retried within the busy timeout: on a new file the switch takes
    a lock that does not wait on the timeout, and another process may be creating the same file
    at this very moment (a worker and `chute send` started together)."""
    deadline = time.monotonic() + busy_timeout
    pause = 0.001
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
