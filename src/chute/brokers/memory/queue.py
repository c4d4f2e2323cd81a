"""The memory broker's queue half: messages in heaps per queue, leases fenced by a claim, delays, the
dead-letter queue, all under the store half's condition variable (a fetch waits on it)."""

from __future__ import annotations

import heapq
import itertools
import os
import time
from collections.abc import Sequence

from ...errors import QueueFull
from ...results import ResultRecord
from ...states import State
from ..base import DeadLetter, Delivery, Outgoing, QueueStats
from ..shared import fan_out, idempotency_slot, unrouted_key
from .store import MemoryStore

READY, LEASED, DELAYED, DEAD = 0, 1, 2, 3
_DERIVED = {READY: State.QUEUED, LEASED: State.STARTED, DELAYED: State.QUEUED, DEAD: State.DEAD}


class _Message:
    """One message and where it is in its life: `due` is its ETA while DELAYED, its lease's end while LEASED."""

    __slots__ = ("queue", "id", "body", "priority", "seq", "state", "due", "claim", "deliveries", "reason", "dead_at")

    def __init__(self, out: Outgoing, seq: int) -> None:
        self.queue, self.id, self.body, self.priority, self.seq = out.queue, out.id, out.body, out.priority, seq
        self.state, self.due, self.claim, self.deliveries, self.reason, self.dead_at = READY, 0.0, "", 0, "", 0.0


class MemoryQueue(MemoryStore):
    """The Queue protocol in memory, built on its store half: an ack writes results in the same step
    (`Features.acks_with_results`), and a task's state is read from its message while it has one."""

    def __init__(self) -> None:
        super().__init__()
        self._seq = itertools.count()
        self._messages: dict[str, _Message] = {}
        self._ready: dict[str, list[tuple[int, int, str]]] = {}  # queue -> heap(-priority, seq, id)
        self._timed: list[tuple[float, int, str]] = []  # heap(due, seq, id) of DELAYED and LEASED
        self._dead: dict[str, _Message] = {}
        self._keys: dict[str, tuple[str, float]] = {}
        self._known_queues: set[str] = set()
        self._groups: dict[str, set[str]] = {}

    def _carried(self, task_id: str) -> tuple[str, State] | None:
        msg = self._messages.get(task_id) or self._dead.get(task_id)
        return None if msg is None else (msg.queue, _DERIVED[msg.state])

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
