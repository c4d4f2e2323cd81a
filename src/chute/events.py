"""Lifecycle events: what workers did, cheaply, for dashboards and metrics.

A worker appends each event as a tuple to a bounded in-memory buffer (never blocking a task: when
the buffer is full the oldest events are dropped and counted); its heartbeat thread flushes the
buffer every half second as one encoded batch, one write to the broker per flush, however many
events it holds. Readers page through batches with `read_events`.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from typing import Any

import msgspec

KINDS = ("received", "started", "succeeded", "failed", "retried", "dead", "cancelled",
         "worker-online", "worker-heartbeat", "worker-offline")


class Event(msgspec.Struct, array_like=True):
    """One event, encoded as a JSON array in this field order (compact batches).

    A task's outcome is one record carrying its whole timeline: `received` (when the worker took
    it), `at - duration` (when it started) and `at` (when it finished, as `kind`).
    """

    at: float
    kind: str
    worker: str
    task_id: str = ""
    name: str = ""
    queue: str = ""
    attempt: int = 0
    duration: float = 0.0  # seconds, for outcomes
    error: str = ""  # "Type: message" for failures
    received: float = 0.0

    @property
    def started(self) -> float:
        return self.at - self.duration


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(list[Event]).decode


class EventBuffer:
    """A worker's bounded event buffer. `emit` is safe from any thread and never blocks."""

    def __init__(self, worker: str, capacity: int = 50_000) -> None:
        self.worker = worker
        self.capacity = capacity
        self.dropped = 0
        self._events: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=capacity)

    def emit(self, kind: str, task_id: str = "", name: str = "", queue: str = "", attempt: int = 0,
             duration: float = 0.0, error: str = "", received: float = 0.0, at: float = 0.0) -> None:
        events = self._events
        if len(events) >= self.capacity:
            self.dropped += 1  # the deque drops the oldest; under pressure tasks win over events
        events.append((at or time.time(), kind, self.worker, task_id, name, queue, attempt, duration, error,
                       received))

    def drain(self) -> bytes | None:
        """Everything buffered so far as one encoded batch, or None if empty."""
        out: list[tuple[Any, ...]] = []
        pop = self._events.popleft
        try:
            while True:
                out.append(pop())
        except IndexError:
            pass
        return _encode(out) if out else None


def decode_batch(data: bytes) -> list[Event]:
    return _decode(data)


def iter_events(batches: list[tuple[int, bytes]]) -> Iterator[Event]:
    for _, data in batches:
        yield from decode_batch(data)
