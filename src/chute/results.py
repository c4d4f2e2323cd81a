"""Result records: what happened to each task, as a store keeps it (the Store protocol is brokers/store.py)."""

from __future__ import annotations

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
