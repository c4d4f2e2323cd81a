"""The SQLite broker's queue half: publish, claim under a lease, settle, and the dead-letter queue.

Fast paths (docs/benchmarks.md): a lone message without options is one INSERT; a fetch claims up to
`limit` rows in one UPDATE … RETURNING; an ack deletes a whole batch and, when the broker is its own
store, writes the batch's results in the same transaction; an idle fetch sleeps on the write-ahead
log (`watch.py`) until some process commits.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

from ...errors import QueueFull
from ...results import ResultRecord
from ..base import DeadLetter, Delivery, Outgoing, QueueStats
from ..shared import fan_out, idempotency_slot, ids_of, unrouted_key
from .schema import DELAYED, LEASED, READY
from .store import SQLiteStore, write_results
from .watch import IdleLooks

_PICK_ONE = ("SELECT seq FROM chute_messages WHERE state = 0 AND queue = ? "
             "ORDER BY priority DESC, seq LIMIT ?")  # the head of one queue


class SQLiteQueue(SQLiteStore):
    """The Queue protocol on the file, built on its store half: an ack writes results in its own
    transaction (`Features.acks_with_results`)."""

    _looking: threading.local  # per fetching thread: its IdleLooks

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

    def declare_group(self, group: str, patterns: Sequence[str]) -> None:
        with self._write() as c:
            c.executemany("INSERT OR IGNORE INTO chute_groups VALUES (?, ?, ?)",
                          [(group, p, time.time()) for p in patterns])

    # -- consuming -----------------------------------------------------------------------------
    def fetch(self, queues: Sequence[str], limit: int, lease: float, timeout: float) -> list[Delivery]:
        """Claim up to `limit`; an empty queue is looked at again on a short backoff for a moment
        after each commit, and otherwise sleeps until some process writes the log (see watch.py)."""
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
                write_results(c, results)
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
