"""The Store protocol: what a task's messages leave behind, kept apart from the queue that carries them.

Results and the waits on them, cancellations, coordination between processes (leases, meta values,
token buckets, start counts), the worker registry and the event log. Any queue pairs with any store
(`pairing.py`): RabbitMQ with a SQLite or Redis store is the same case as SQLite with itself. Each part is
a protocol of its own, so a reader sees which part a caller needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec

from ..results import ResultRecord
from ..states import State
from .features import Features


class WorkerInfo(msgspec.Struct, omit_defaults=True):
    """A worker process's self-description, refreshed with each heartbeat."""

    id: str  # unique per process start
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: float
    heartbeat_at: float
    processed: int = 0
    failed: int = 0
    running: list[str] = msgspec.field(default_factory=list)  # task ids
    state: str = "online"  # online, stopping
    # per queue, messages its broker connection holds that the server counts as delivered, for brokers
    # that cannot count them server-side (RabbitMQ fills these in with each heartbeat): handed to the
    # worker under a lease, and prefetched (still waiting for the worker to ask)
    in_flight: dict[str, int] = msgspec.field(default_factory=dict)
    prefetched: dict[str, int] = msgspec.field(default_factory=dict)


@runtime_checkable
class ResultStore(Protocol):
    """Task outcomes, each kept for its time-to-live."""

    def started(self, records: Sequence[ResultRecord]) -> set[str]:
        """Note that a worker took these tasks and return the ids among them that were cancelled, in one
        round trip for a whole fetched batch. With `Features.marks_started` the STARTED marks are written
        here (never over a cancellation or an outcome); otherwise nothing is written (`Pairing` says who
        writes them)."""
        ...

    def store(self, records: Sequence[ResultRecord]) -> None:
        """Write records in one batch. A STARTED record is written only over none, QUEUED, RETRYING or
        STARTED, in the same step: never over a cancellation or an outcome that came first."""
        ...

    def queued(self, records: Sequence[ResultRecord]) -> None:
        """Record QUEUED for the tasks that have no record yet, never over one: for a queue the store
        cannot see (RabbitMQ), written before the messages are published."""
        ...

    def forget_queued(self, task_ids: Sequence[str]) -> None:
        """Drop the records of these tasks that are still only QUEUED marks (a full queue dropped them)."""
        ...

    def get(self, task_id: str) -> ResultRecord | None:
        """The task's current record, or None if unknown or expired."""
        ...

    def wait(self, task_id: str, timeout: float | None) -> ResultRecord | None:
        """Block until the task is finished or `timeout` passes; return its latest record."""
        ...

    def purge_expired(self) -> int:
        """Delete expired results; return how many."""
        ...

    def cancel(self, task_id: str, ttl: float) -> State:
        """Atomically mark a task CANCELLED unless it already finished; return its state afterwards."""
        ...

    def cancelled(self, task_ids: Sequence[str]) -> set[str]:
        """Which of these tasks are marked CANCELLED (one round trip for a whole fetched batch)."""
        ...


@runtime_checkable
class Coordination(Protocol):
    """What processes that share a store agree on: leases, small values, counters, token buckets."""

    def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew a named lease for `ttl` seconds (the store's clock); False if another holds it."""
        ...

    def release_lease(self, name: str, owner: str) -> None:
        """Give up a lease early, if `owner` holds it."""
        ...

    def get_meta(self, key: str) -> str | None:
        """A small durable value (scheduler bookkeeping, counters), or None."""
        ...

    def set_meta(self, key: str, value: str) -> None:
        """Write a small durable value."""
        ...

    def add_meta(self, key: str, n: int) -> int:
        """Atomically add `n` to an integer value (0 if unset); return the new value."""
        ...

    def join(self, key: str, member: str, ttl: float) -> int:
        """Atomically add `member` to the set `key` (kept `ttl` seconds); return the set's size.

        Workflows count a fan-in step's finished parents with it: adding twice counts once.
        """
        ...

    def take_token(self, key: str, rate: float, burst: float) -> float:
        """Take one token from a bucket refilled at `rate` per second up to `burst`; return 0 if
        taken, else the seconds until one will be there (nothing taken). Shared by every worker."""
        ...

    def count_start(self, task_id: str, attempt: int, ttl: float) -> int:
        """Atomically count one more start of this attempt of a task; return the count.

        Workers call it only for redelivered messages (their earlier holder died), so a task that
        keeps killing its worker is found without a write on the hot path.
        """
        ...


@runtime_checkable
class Registry(Protocol):
    """The workers that are alive, each as it last described itself."""

    def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        """Record a worker as alive for `ttl` seconds."""
        ...

    def worker_gone(self, worker_id: str) -> None:
        """Forget a worker that stopped cleanly."""
        ...

    def workers(self) -> list[WorkerInfo]:
        """Workers whose last heartbeat has not expired."""
        ...


@runtime_checkable
class EventLog(Protocol):
    """Lifecycle events (chute.events), in batches, kept for a retention time."""

    def record_events(self, batch: bytes, retention: float) -> None:
        """Append one encoded batch of events; keep `retention` seconds."""
        ...

    def read_events(self, after: int = 0, limit: int = 100) -> list[tuple[int, bytes]]:
        """Event batches after sequence number `after`, oldest first, as (sequence, batch)."""
        ...


@runtime_checkable
class AsyncStore(Protocol):
    """A store's native asyncio side (redis.asyncio); without one, asyncio code runs the sync calls on a
    thread."""

    async def get(self, task_id: str) -> ResultRecord | None: ...

    async def wait(self, task_id: str, timeout: float | None) -> ResultRecord | None: ...

    async def queued(self, records: Sequence[ResultRecord]) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Store(ResultStore, Coordination, Registry, EventLog, Protocol):
    """Everything a task's messages leave behind, in one place the App opens once."""

    @property
    def features(self) -> Features:
        """What it does natively: declared by its class."""
        ...

    @property
    def aio(self) -> AsyncStore | None:
        """Its native asyncio side, or None."""
        ...

    def close(self) -> None:
        """Release connections; the store may not be used afterwards."""
        ...
