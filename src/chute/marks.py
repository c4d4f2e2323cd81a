"""STARTED marks for a store that cannot see the queue's messages, written without a transaction of their own.

A SQLite or memory store derives STARTED from the messages it holds itself; paired with another queue
(RabbitMQ's is the usual case: `Pairing.recorder_marks_started`), the marks must be written. The App
wraps its store in `StartedMarks`, which every caller then uses as the store itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from .brokers.base import Features
from .brokers.store import AsyncStore, Store, WorkerInfo
from .results import ResultRecord
from .states import State

FLUSH_AFTER = 0.02  # seconds a STARTED mark may wait to share a transaction with outcomes


class StartedMarks:
    """The App's store, whose `started` also records STARTED; every other call is the store's own.

    To cost no transaction of its own, a STARTED record waits to be written with the next batch of
    outcomes (one transaction), or by the next fetch once it is 20 ms old (`flush`), or at the next
    worker heartbeat; a task that finishes within that time is never marked STARTED on disk. Writes
    go through one lock, so a STARTED record can never land after its task's outcome.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.features: Features = inner.features
        self.aio: AsyncStore | None = inner.aio
        self._pending: dict[str, ResultRecord] = {}
        self._since = 0.0  # monotonic time the oldest waiting mark was made
        self._lock = threading.Lock()

    def started(self, records: Sequence[ResultRecord]) -> set[str]:
        cancelled = self.inner.started(records)
        with self._lock:
            if not self._pending:
                self._since = time.monotonic()
            self._pending.update((r.task_id, r) for r in records if r.task_id not in cancelled)
        return cancelled

    def store(self, records: Sequence[ResultRecord]) -> None:
        with self._lock:
            for r in records:
                self._pending.pop(r.task_id, None)
            marks = self._take_marks()
            try:
                self.inner.store([*marks, *records])  # outcomes last: they win over any mark of theirs
            except BaseException:
                for r in marks:
                    self._pending.setdefault(r.task_id, r)
                raise

    def flush(self, older_than: float = 0.0) -> None:
        """Write waiting STARTED records, if the oldest waited `older_than` seconds (the worker calls it
        as each fetch begins, with FLUSH_AFTER, and with each heartbeat)."""
        if not self._pending or time.monotonic() - self._since < older_than:
            return
        with self._lock:
            marks = self._take_marks()
            if marks:
                self.inner.store(marks)

    def _take_marks(self) -> list[ResultRecord]:
        """The waiting marks. A store writes a STARTED mark only over QUEUED, RETRYING or STARTED, in the
        same step: a cancellation made since the task was fetched stands (and the worker's own check then
        interrupts the task); checking first and writing after let a cancel land in between and be undone."""
        marks = list(self._pending.values())
        self._pending.clear()
        return marks

    def queued(self, records: Sequence[ResultRecord]) -> None:
        self.inner.queued(records)

    def forget_queued(self, task_ids: Sequence[str]) -> None:
        self.inner.forget_queued(task_ids)

    def get(self, task_id: str) -> ResultRecord | None:
        rec = self.inner.get(task_id)
        mark = self._pending.get(task_id)
        if mark is not None and (rec is None or not rec.state.finished):
            return mark
        return rec

    def wait(self, task_id: str, timeout: float | None) -> ResultRecord | None:
        return self.inner.wait(task_id, timeout)

    def purge_expired(self) -> int:
        return self.inner.purge_expired()

    def cancel(self, task_id: str, ttl: float) -> State:
        return self.inner.cancel(task_id, ttl)

    def cancelled(self, task_ids: Sequence[str]) -> set[str]:
        return self.inner.cancelled(task_ids)

    def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        return self.inner.acquire_lease(name, owner, ttl)

    def release_lease(self, name: str, owner: str) -> None:
        self.inner.release_lease(name, owner)

    def get_meta(self, key: str) -> str | None:
        return self.inner.get_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        self.inner.set_meta(key, value)

    def join(self, key: str, member: str, ttl: float) -> int:
        return self.inner.join(key, member, ttl)

    def take_token(self, key: str, rate: float, burst: float) -> float:
        return self.inner.take_token(key, rate, burst)

    def count_start(self, task_id: str, attempt: int, ttl: float) -> int:
        return self.inner.count_start(task_id, attempt, ttl)

    def add_meta(self, key: str, n: int) -> int:
        return self.inner.add_meta(key, n)

    def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        self.inner.heartbeat(worker, ttl)

    def worker_gone(self, worker_id: str) -> None:
        self.inner.worker_gone(worker_id)

    def workers(self) -> list[WorkerInfo]:
        return self.inner.workers()

    def record_events(self, batch: bytes, retention: float) -> None:
        self.inner.record_events(batch, retention)

    def read_events(self, after: int = 0, limit: int = 100) -> list[tuple[int, bytes]]:
        return self.inner.read_events(after, limit)

    def close(self) -> None:
        self.flush()
        self.inner.close()
