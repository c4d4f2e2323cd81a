"""Task states: one vocabulary for the wire, the result store, the CLI and the dashboard."""

from __future__ import annotations

import enum


class State(str, enum.Enum):
    """Where a task is in its life. The value is what is stored and shown."""

    QUEUED = "queued"
    STARTED = "started"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # no record: never sent, or its result expired

    @property
    def finished(self) -> bool:
        """True for states a task never leaves on its own (replay or retry start it again)."""
        return self in _FINISHED

    def __str__(self) -> str:
        return self.value


_FINISHED = frozenset({State.SUCCEEDED, State.FAILED, State.DEAD, State.CANCELLED})
