"""The SQLite broker's store half: results and the waits on them, cancellation, coordination between
processes (leases, meta values, sets, token buckets, start counts), the worker registry and events.

A task's QUEUED and STARTED states are read from its message row (`schema.DERIVED`), never written:
a task costs no result write until it finishes.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from ...results import ErrorInfo, ResultRecord, derive_record
from ...states import State
from ..store import WorkerInfo
from .pool import Database
from .schema import DERIVED
from .watch import IdleLooks

_encode_error = msgspec.json.Encoder().encode
_decode_error = msgspec.json.Decoder(ErrorInfo).decode
_decode_worker = msgspec.json.Decoder(WorkerInfo).decode


def write_results(c: sqlite3.Connection, records: Sequence[ResultRecord]) -> None:
    """Write result records in the transaction `c` is in (the ack's, when results ride with it)."""
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


class SQLiteStore(Database):
    """The Store protocol on the file: one transaction per call, reads outside any transaction."""

    def started(self, records: Sequence[ResultRecord]) -> set[str]:
        return self.cancelled([r.task_id for r in records])  # STARTED itself is derived from the lease

    def store(self, records: Sequence[ResultRecord]) -> None:
        if not records:
            return
        with self._write() as c:
            write_results(c, records)

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
        return derive_record(task_id, rec, msg[1], DERIVED[msg[0]])

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

    # -- registry and events -----------------------------------------------------------------------
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
