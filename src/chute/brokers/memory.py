"""In-process broker and result store for tests and eager development (`memory://`).

Guarantees: the same delivery semantics as every broker (leases, fencing, priorities, ETAs,
dead-lettering) within one process. Non-guarantees: nothing survives the process; other
processes cannot see it. Round trips: none (a lock and a condition variable).
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections.abc import Sequence

from ..errors import QueueFull
from ..results import ResultRecord, derive_record
from ..states import State
from .base import DeadLetter, Delivery, Features, Outgoing, QueueStats
from .shared import fan_out, idempotency_slot, unrouted_key
from .store import Store, WorkerInfo

READY, LEASED, DELAYED, DEAD = 0, 1, 2, 3
_STARTABLE = (State.QUEUED, State.RETRYING, State.STARTED)  # what a STARTED record may be written over
_DERIVED = {READY: State.QUEUED, LEASED: State.STARTED, DELAYED: State.QUEUED, DEAD: State.DEAD}


class _Message:
    __slots__ = ("queue", "id", "body", "priority", "seq", "state", "due", "claim", "deliveries", "reason", "dead_at")

    def __init__(self, out: Outgoing, seq: int) -> None:
        self.queue = out.queue
        self.id = out.id
        self.body = out.body
        self.priority = out.priority
        self.seq = seq
        self.state = READY
        self.due = 0.0  # ETA while DELAYED, lease expiry while LEASED
        self.claim = ""
        self.deliveries = 0
        self.reason = ""
        self.dead_at = 0.0


class MemoryBroker:
    """Queue and Store in one process's memory."""

    features = Features(acks_with_results=True, derives_states=True)
    aio = None  # asyncio code calls it on a thread

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._messages: dict[str, _Message] = {}
        self._ready: dict[str, list[tuple[int, int, str]]] = {}  # queue -> heap(-priority, seq, id)
        self._timed: list[tuple[float, int, str]] = []  # heap(due, seq, id) of DELAYED and LEASED
        self._dead: dict[str, _Message] = {}
        self._keys: dict[str, tuple[str, float]] = {}
        self._results: dict[str, ResultRecord] = {}
        self._workers: dict[str, tuple[WorkerInfo, float]] = {}
        self._known_queues: set[str] = set()
        self._starts: dict[str, int] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._meta: dict[str, str] = {}
        self._joins: dict[str, set[str]] = {}
        self._groups: dict[str, set[str]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._events: list[tuple[int, float, bytes]] = []
        self._event_seq = 0

    # -- producing -----------------------------------------------------------------------------
    def publish(self, messages: Sequence[Outgoing]) -> list[str]:
        now = time.time()
        ids: list[str] = []
        with self._cond:
            self._enforce_limits(messages, before=True)
            for out in messages:
                if out.topic is not None:
                    subs = [(g, p) for g, pats in self._groups.items() for p in pats]
                    copies, _, unrouted = fan_out([out], subs)
                    for copy in copies:
                        self._store_message(copy, now)
                    for topic in unrouted:
                        self.add_meta(unrouted_key(topic), 1)
                    ids.append(out.id)
                    continue
                if out.idempotency_key is not None:
                    slot = idempotency_slot(out.queue, out.idempotency_key)
                    held = self._keys.get(slot)
                    if held is not None and held[1] > now:
                        ids.append(held[0])
                        continue
                    self._keys[slot] = (out.id, now + out.idempotency_window)
                self._store_message(out, now)
                ids.append(out.id)
            self._enforce_limits(messages, before=False)
            self._cond.notify_all()
        return ids

    def _enforce_limits(self, messages: Sequence[Outgoing], before: bool) -> None:
        """Before storing, refuse what would overflow a "reject" queue; after, trim "drop_oldest" ones."""
        limits = {m.queue: (m.max_length, m.on_full) for m in messages if m.max_length is not None}
        for queue, (limit, on_full) in limits.items():
            assert limit is not None
            if (on_full == "drop_oldest") == before:
                continue
            waiting = sorted((m.seq, m.id) for m in self._messages.values()
                             if m.queue == queue and m.state in (READY, DELAYED))
            excess = len(waiting) + (sum(1 for m in messages if m.queue == queue) if before else 0) - limit
            if excess <= 0:
                continue
            if on_full != "drop_oldest":
                raise QueueFull(f"queue {queue!r} is full: {len(waiting)} waiting, limit {limit} "
                                f"(on_full={on_full!r}); nothing was enqueued")
            for _, mid in waiting[:excess]:
                del self._messages[mid]
            key = f"chute.dropped:{queue}"
            self._meta[key] = str(int(self._meta.get(key, "0")) + min(excess, len(waiting)))

    def _store_message(self, out: Outgoing, now: float) -> None:
        if out.id in self._messages or out.id in self._dead:
            return  # the same message published twice is stored once, as in SQLite
        msg = _Message(out, next(self._seq))
        self._messages[out.id] = msg
        self._known_queues.add(out.queue)
        if out.eta is not None and out.eta > now:
            msg.state, msg.due = DELAYED, out.eta
            heapq.heappush(self._timed, (msg.due, msg.seq, msg.id))
        else:
            heapq.heappush(self._ready.setdefault(out.queue, []), (-msg.priority, msg.seq, msg.id))

    def declare_group(self, group: str, patterns: Sequence[str]) -> None:
        with self._cond:
            self._groups.setdefault(group, set()).update(patterns)

    # -- consuming -----------------------------------------------------------------------------
    def _promote(self, now: float) -> float | None:
        """Make due delayed messages and expired leases ready; return the next due time."""
        timed = self._timed
        while timed and timed[0][0] <= now:
            due, seq, mid = heapq.heappop(timed)
            msg = self._messages.get(mid)
            if msg is None or msg.seq != seq or msg.due != due or msg.state not in (DELAYED, LEASED):
                continue  # stale heap entry
            msg.state, msg.claim = READY, ""
            heapq.heappush(self._ready.setdefault(msg.queue, []), (-msg.priority, msg.seq, msg.id))
        return timed[0][0] if timed else None

    def fetch(self, queues: Sequence[str], limit: int, lease: float, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.time()
                next_due = self._promote(now)
                out = self._take(queues, limit, lease, now)
                if out:
                    return out
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                if next_due is not None:
                    remaining = min(remaining, max(0.0, next_due - now))
                self._cond.wait(remaining)

    def _take(self, queues: Sequence[str], limit: int, lease: float, now: float) -> list[Delivery]:
        out: list[Delivery] = []
        claim = os.urandom(8).hex()
        while len(out) < limit:
            best: tuple[int, int, str] | None = None
            best_q = ""
            for q in queues:
                heap = self._ready.get(q)
                while heap:
                    m = self._messages.get(heap[0][2])
                    if m is not None and m.state == READY and m.seq == heap[0][1]:
                        break
                    heapq.heappop(heap)
                if heap and (best is None or heap[0] < best):
                    best, best_q = heap[0], q
            if best is None:
                break
            heapq.heappop(self._ready[best_q])
            msg = self._messages[best[2]]
            msg.seq = next(self._seq)
            msg.state, msg.claim, msg.due = LEASED, claim, now + lease
            msg.deliveries += 1
            heapq.heappush(self._timed, (msg.due, msg.seq, msg.id))
            out.append(Delivery(msg.queue, msg.id, msg.body, claim, msg.deliveries))
        return out

    def _held(self, d: Delivery) -> _Message | None:
        msg = self._messages.get(d.id)
        if msg is None or msg.state != LEASED or msg.claim != d.claim:
            return None
        return msg

    def ack(self, deliveries: Sequence[Delivery], results: Sequence[ResultRecord] = ()) -> int:
        """Acknowledge; with `results`, record them in the same step."""
        n = 0
        if results:
            self.store(results)
        with self._cond:
            for d in deliveries:
                if self._held(d) is not None:
                    del self._messages[d.id]
                    n += 1
        return n

    def nack(self, delivery: Delivery, body: bytes, retry_at: float) -> bool:
        with self._cond:
            msg = self._held(delivery)
            if msg is None:
                return False
            msg.body, msg.deliveries, msg.claim = body, 0, ""
            msg.seq = next(self._seq)
            if retry_at > time.time():
                msg.state, msg.due = DELAYED, retry_at
                heapq.heappush(self._timed, (msg.due, msg.seq, msg.id))
            else:
                msg.state = READY
                heapq.heappush(self._ready.setdefault(msg.queue, []), (-msg.priority, msg.seq, msg.id))
            self._cond.notify_all()
        return True

    def release(self, deliveries: Sequence[Delivery]) -> int:
        n = 0
        with self._cond:
            for d in deliveries:
                msg = self._held(d)
                if msg is None:
                    continue
                msg.state, msg.claim = READY, ""
                msg.deliveries = max(0, msg.deliveries - 1)
                msg.seq = next(self._seq)
                heapq.heappush(self._ready.setdefault(msg.queue, []), (-msg.priority, msg.seq, msg.id))
                n += 1
            self._cond.notify_all()
        return n

    def dead_letter(self, delivery: Delivery, reason: str, body: bytes | None = None) -> bool:
        with self._cond:
            msg = self._held(delivery)
            if msg is None:
                return False
            del self._messages[msg.id]
            msg.state, msg.claim, msg.reason, msg.dead_at = DEAD, "", reason, time.time()
            if body is not None:
                msg.body = body
            self._dead[msg.id] = msg
        return True

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        held: list[bool] = []
        with self._cond:
            due = time.time() + lease
            for d in deliveries:
                msg = self._held(d)
                if msg is not None:
                    msg.due, msg.seq = due, next(self._seq)
                    heapq.heappush(self._timed, (msg.due, msg.seq, msg.id))
                held.append(msg is not None)
        return held

    # -- operating -----------------------------------------------------------------------------
    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        with self._cond:
            self._promote(time.time())
            names = sorted(self._known_queues if queues is None else set(queues))
            table = {q: QueueStats(q) for q in names}
            for msg in self._messages.values():
                s = table.get(msg.queue)
                if s is None:
                    continue
                if msg.state == READY:
                    s.ready += 1
                elif msg.state == LEASED:
                    s.in_flight += 1
                else:
                    s.delayed += 1
            for msg in self._dead.values():
                if msg.queue in table:
                    table[msg.queue].dead += 1
            return list(table.values())

    def _dead_matching(self, queue: str | None, ids: Sequence[str] | None) -> list[_Message]:
        wanted = None if ids is None else set(ids)
        return [m for m in self._dead.values()
                if (queue is None or m.queue == queue) and (wanted is None or m.id in wanted)]

    def dead_letters(self, queue: str | None = None, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        with self._cond:
            found = sorted(self._dead_matching(queue, None), key=lambda m: (m.dead_at, m.seq))
            return [DeadLetter(m.queue, m.id, m.body, m.reason, m.dead_at) for m in found[offset:offset + limit]]

    def replay(self, queue: str | None = None, ids: Sequence[str] | None = None) -> int:
        with self._cond:
            found = self._dead_matching(queue, ids)
            for msg in found:
                del self._dead[msg.id]
                msg.state, msg.reason, msg.deliveries, msg.seq = READY, "", 0, next(self._seq)
                self._messages[msg.id] = msg
                heapq.heappush(self._ready.setdefault(msg.queue, []), (-msg.priority, msg.seq, msg.id))
            self._cond.notify_all()
            return len(found)

    def purge_dead(self, queue: str | None = None, ids: Sequence[str] | None = None) -> int:
        with self._cond:
            found = self._dead_matching(queue, ids)
            for msg in found:
                del self._dead[msg.id]
            return len(found)

    def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        with self._cond:
            self._workers[worker.id] = (worker, time.time() + ttl)

    def worker_gone(self, worker_id: str) -> None:
        with self._cond:
            self._workers.pop(worker_id, None)

    def workers(self) -> list[WorkerInfo]:
        now = time.time()
        with self._cond:
            return [w for w, until in self._workers.values() if until > now]

    def record_events(self, batch: bytes, retention: float) -> None:
        with self._cond:
            now = time.time()
            self._event_seq += 1
            self._events.append((self._event_seq, now, batch))
            while self._events and self._events[0][1] < now - retention:
                self._events.pop(0)

    def read_events(self, after: int = 0, limit: int = 100) -> list[tuple[int, bytes]]:
        with self._cond:
            return [(s, b) for s, _, b in self._events if s > after][:limit]

    def bind(self, store: Store) -> None:
        pass  # it keeps its own bookkeeping

    def beat(self, worker_id: str) -> tuple[dict[str, int], dict[str, int]]:
        return {}, {}  # counted in `stats`

    def stopped(self, worker_id: str) -> None:
        pass  # it prefetches nothing

    def close(self) -> None:
        pass

    # -- Store ---------------------------------------------------------------------------------
    def started(self, records: Sequence[ResultRecord]) -> set[str]:
        return self.cancelled([r.task_id for r in records])  # STARTED itself is derived from the lease

    def store(self, records: Sequence[ResultRecord]) -> None:
        with self._cond:
            now = time.time()
            for r in records:
                if r.state is State.STARTED:  # never over a cancellation or an outcome
                    held = self._get(r.task_id, now)
                    if held is not None and held.state not in _STARTABLE:
                        continue
                self._results[r.task_id] = r
            self._cond.notify_all()

    def queued(self, records: Sequence[ResultRecord]) -> None:
        with self._cond:
            now = time.time()
            for r in records:
                if self._get(r.task_id, now) is None:
                    self._results[r.task_id] = r

    def forget_queued(self, task_ids: Sequence[str]) -> None:
        with self._cond:
            for i in task_ids:
                rec = self._results.get(i)
                if rec is not None and rec.state is State.QUEUED:
                    del self._results[i]

    def get(self, task_id: str) -> ResultRecord | None:
        with self._cond:
            return self._get(task_id, time.time())

    def _get(self, task_id: str, now: float) -> ResultRecord | None:
        rec = self._results.get(task_id)
        if rec is not None and rec.expires_at is not None and rec.expires_at <= now:
            del self._results[task_id]
            rec = None
        msg = self._messages.get(task_id) or self._dead.get(task_id)
        if msg is None:
            return rec
        return derive_record(task_id, rec, msg.queue, _DERIVED[msg.state])

    def wait(self, task_id: str, timeout: float | None) -> ResultRecord | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                rec = self._get(task_id, time.time())
                if rec is not None and rec.state.finished:
                    return rec
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return rec
                self._cond.wait(remaining if remaining is not None else 1.0)

    def cancel(self, task_id: str, ttl: float) -> State:
        with self._cond:
            now = time.time()
            rec = self._get(task_id, now)
            if rec is not None and rec.state.finished and rec.state is not State.DEAD:
                return rec.state
            self._results[task_id] = ResultRecord(task_id, State.CANCELLED, updated_at=now, expires_at=now + ttl)
            self._cond.notify_all()
            return State.CANCELLED

    def cancelled(self, task_ids: Sequence[str]) -> set[str]:
        with self._cond:
            return {i for i in task_ids if (r := self._results.get(i)) is not None and r.state is State.CANCELLED}

    def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        with self._cond:
            now = time.time()
            holder = self._locks.get(name)
            if holder is None or holder[0] == owner or holder[1] <= now:
                self._locks[name] = (owner, now + ttl)
                return True
            return False

    def release_lease(self, name: str, owner: str) -> None:
        with self._cond:
            if self._locks.get(name, ("",))[0] == owner:
                del self._locks[name]

    def get_meta(self, key: str) -> str | None:
        return self._meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value

    def add_meta(self, key: str, n: int) -> int:
        with self._cond:
            value = int(self._meta.get(key) or 0) + n
            self._meta[key] = str(value)
            return value

    def join(self, key: str, member: str, ttl: float) -> int:
        with self._cond:
            members = self._joins.setdefault(key, set())
            members.add(member)
            return len(members)

    def take_token(self, key: str, rate: float, burst: float) -> float:
        with self._cond:
            now = time.monotonic()
            tokens, at = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - at) * rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / rate

    def count_start(self, task_id: str, attempt: int, ttl: float) -> int:
        with self._cond:
            key = f"{task_id}:{attempt}"
            self._starts[key] = self._starts.get(key, 0) + 1
            return self._starts[key]

    def purge_expired(self) -> int:
        now = time.time()
        with self._cond:
            gone = [k for k, r in self._results.items() if r.expires_at is not None and r.expires_at <= now]
            for k in gone:
                del self._results[k]
            return len(gone)
