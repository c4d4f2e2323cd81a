"""The ResultBackend protocol: what happened to each task, kept for a time-to-live."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec

from .states import State


class ErrorInfo(msgspec.Struct, frozen=True):
    """An exception as the worker saw it: type name (module-qualified), message, traceback text."""

    type: str
    message: str
    traceback: str = ""


class ResultRecord(msgspec.Struct, omit_defaults=True):
    """The latest known state of one task."""

    task_id: str
    state: State
    name: str = ""
    queue: str = ""
    value: bytes | None = None  # encoded return value (SUCCEEDED)
    codec: str = "json"  # the codec `value` was written with
    error: ErrorInfo | None = None  # last failure (RETRYING, FAILED, DEAD)
    attempt: int = 0
    updated_at: float = 0.0
    expires_at: float | None = None  # unix seconds; gone after this


@runtime_checkable
class ResultBackend(Protocol):
    """Stores task outcomes. A broker that can answer for queued and running tasks itself may
    implement `started` as a no-op and derive QUEUED/STARTED in `get`."""

    def started(self, records: Sequence[ResultRecord]) -> set[str]:
        """Note that a worker took these tasks (a store may derive this instead of writing it), and
        return the ids among them that were cancelled, which it must not mark: one round trip for a
        whole fetched batch."""
        ...

    def store(self, records: Sequence[ResultRecord]) -> None:
        """Write outcomes (RETRYING, SUCCEEDED, FAILED, DEAD) in one batch. A STARTED record (how a store
        that cannot see the messages is told of a start) is written only over none, QUEUED, RETRYING or
        STARTED, in the same step: never over a cancellation or an outcome that came first."""
        ...

    def queued(self, records: Sequence[ResultRecord]) -> None:
        """Record QUEUED for the tasks that have no record yet, never over one: for a broker that
        cannot answer for the messages it holds (RabbitMQ), written before they are published."""
        ...

    def forget_queued(self, task_ids: Sequence[str]) -> None:
        """Drop the records of these tasks that are still only QUEUED marks (their messages will never
        run: a full queue dropped them)."""
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

    def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew a named lease for `ttl` seconds (the store's clock); False if another holds it."""
        ...

    def release_lease(self, name: str, owner: str) -> None:
        """Give up a lease early, if `owner` holds it."""
        ...

    def get_meta(self, key: str) -> str | None:
        """A small durable value (scheduler bookkeeping), or None."""
        ...

    def set_meta(self, key: str, value: str) -> None:
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


def derive_record(task_id: str, stored: ResultRecord | None, queue: str, message_state: State) -> ResultRecord:
    """Combine a stored record with the state of the task's message still in the broker.

    For brokers that can see their messages (memory, SQLite). A success or final failure stands
    even if the message came back (the worker died between recording and acking); a DEAD record
    is superseded by a replayed message; a held lease means STARTED.
    """
    if stored is not None and stored.state in (State.SUCCEEDED, State.FAILED, State.CANCELLED):
        return stored
    if message_state is State.QUEUED and stored is not None and stored.state is State.RETRYING:
        return stored
    if stored is None:
        return ResultRecord(task_id, message_state, queue=queue)
    return ResultRecord(task_id, message_state, name=stored.name, queue=stored.queue or queue,
                        error=stored.error, attempt=stored.attempt, updated_at=stored.updated_at,
                        expires_at=stored.expires_at)
