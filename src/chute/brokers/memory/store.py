"""The memory broker's store half: results and the waits on them, cancellation, coordination, the worker
registry and events, in one process's memory under one condition variable."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from ...results import ResultRecord, derive_record
from ...states import State
from ..store import WorkerInfo

_STARTABLE = (State.QUEUED, State.RETRYING, State.STARTED)  # what a STARTED record may be written over


class MemoryStore:
    """The Store protocol in memory. The queue half extends it: its messages, under the same condition
    variable, are what a task's QUEUED and STARTED states are read from (`_carried`)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._results: dict[str, ResultRecord] = {}
        self._workers: dict[str, tuple[WorkerInfo, float]] = {}
        self._starts: dict[str, int] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._meta: dict[str, str] = {}
        self._joins: dict[str, set[str]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._events: list[tuple[int, float, bytes]] = []
        self._event_seq = 0

    def _carried(self, task_id: str) -> tuple[str, State] | None:
        """The queue of the task's message and the state it implies, if a message is held (none here)."""
        return None

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
        carried = self._carried(task_id)
        if carried is None:
            return rec
        return derive_record(task_id, rec, *carried)

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

    # -- registry and events ------------------------------------------------------------------------
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
