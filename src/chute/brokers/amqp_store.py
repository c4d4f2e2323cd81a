"""The App's result store as the RabbitMQ broker hands it back: it also records STARTED.

RabbitMQ holds the messages, so a SQLite or memory store (which derives STARTED from messages it
holds itself) must be told; the recorder does it without a transaction of its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from ..results import ResultBackend, ResultRecord
from ..states import State


class StartedRecorder:
    """Delegates every call to the App's result store; `started` also records STARTED.

    A SQLite or memory store derives STARTED from the messages it holds itself; these are held by
    RabbitMQ, so the record must be written (Redis's `started` writes it already, never over an
    outcome). To cost no transaction of its own, a STARTED record waits to be written with the next
    batch of outcomes (one transaction), or by the next fetch once it is 20 ms old, or at the next
    worker heartbeat; a task that finishes within that time is never marked STARTED on disk. Writes
    go through one lock, so a STARTED record can never land after its task's outcome.
    """

    def __init__(self, store: Callable[[], ResultBackend], opened: Callable[[], ResultBackend | None]) -> None:
        self._store, self._opened = store, opened
        self._pending: dict[str, ResultRecord] = {}
        self._since = 0.0  # monotonic time the oldest waiting mark was made
        self._lock = threading.Lock()

    @property
    def inner(self) -> ResultBackend:
        return self._store()

    def started(self, records: Sequence[ResultRecord]) -> set[str]:
        store = self.inner
        cancelled = store.started(records)
        if type(store).__name__ != "RedisBroker":
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
        """Write waiting STARTED records, if the oldest waited `older_than` seconds (the broker calls it
        as each fetch begins, and with each worker heartbeat)."""
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

    # the store's asyncio twins where it has them (Redis); absent otherwise, so callers use a thread
    @property
    def get_async(self) -> Callable[[str], Awaitable[ResultRecord | None]]:
        native = getattr(self.inner, "get_async", None)
        if native is None:
            raise AttributeError("get_async")

        async def get(task_id: str) -> ResultRecord | None:
            rec: ResultRecord | None = await native(task_id)
            mark = self._pending.get(task_id)
            return mark if mark is not None and (rec is None or not rec.state.finished) else rec

        return get

    @property
    def wait_async(self) -> Callable[[str, float | None], Awaitable[ResultRecord | None]]:
        native = getattr(self.inner, "wait_async", None)
        if native is None:
            raise AttributeError("wait_async")
        return cast(Callable[[str, float | None], Awaitable[ResultRecord | None]], native)

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

    def close(self) -> None:
        store = self._opened()
        if store is not None:
            close_store(store)


def close_store(store: object) -> None:
    close = getattr(store, "close", None)
    if close is not None:
        close()
