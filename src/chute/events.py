"""Lifecycle events: what workers did, cheaply, for dashboards and metrics.

A worker appends each event as a tuple to a bounded in-memory buffer (never blocking a task: when
the buffer is full the oldest events are dropped and counted); its heartbeat thread flushes the
buffer every half second as one encoded batch, one write to the broker per flush, however many
events it holds. Readers page through batches with `read_events`.

A finished attempt is one event (`succeeded`, `failed`, `retried`, `dead`, `cancelled`) that also
carries when the worker received and started it, so a fast task costs one event. A task still
waiting in the worker or still running when the worker flushes gets a `received` or `started`
event of its own at that flush, so long tasks show up live. Workers add `worker-online`,
`worker-heartbeat` (every two seconds) and `worker-offline`.

Wire format of a batch: a msgpack array `[worker_id, [at, kind, task_id, name, queue, attempt,
duration, error, received, workflow], ...]`; trailing fields may be left out when empty. (msgpack
rather than JSON: a third smaller and twice as fast to encode, which is what a busy worker pays.
A batch in the same layout as JSON is read too.)
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from typing import Any

import msgspec

KINDS = ("received", "started", "succeeded", "failed", "retried", "dead", "cancelled",
         "worker-online", "worker-heartbeat", "worker-offline")
OUTCOMES = frozenset({"succeeded", "failed", "retried", "dead", "cancelled"})


class Event(msgspec.Struct, frozen=True):
    """One event as readers see it.

    For outcomes, `at` is when the attempt finished, `received` when the worker took the message
    and `at - duration` when the task function started.
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
    workflow: str = ""  # the workflow id of a workflow step

    @property
    def started(self) -> float:
        return self.at - self.duration


class _Wire(msgspec.Struct, array_like=True, frozen=True):
    at: float
    kind: str
    task_id: str = ""
    name: str = ""
    queue: str = ""
    attempt: int = 0
    duration: float = 0.0
    error: str = ""
    received: float = 0.0
    workflow: str = ""


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[str | _Wire]).decode
_decode_json = msgspec.json.Decoder(list[str | _Wire]).decode


class EventBuffer:
    """A worker's bounded event buffer. `emit` is safe from any thread and never blocks."""

    def __init__(self, worker: str, capacity: int = 50_000) -> None:
        self.worker = worker
        self.capacity = capacity
        self.dropped = 0
        self._events: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=capacity)

    def emit(self, kind: str, task_id: str = "", name: str = "", queue: str = "", attempt: int = 0,
             duration: float = 0.0, error: str = "", received: float = 0.0, at: float = 0.0,
             workflow: str = "") -> None:
        events = self._events
        if len(events) >= self.capacity:
            self.dropped += 1  # the deque drops the oldest; under pressure tasks win over events
        if workflow:
            events.append((at or time.time(), kind, task_id, name, queue, attempt, duration, error, received,
                           workflow))
        else:
            events.append((at or time.time(), kind, task_id, name, queue, attempt, duration, error, received))

    def extend(self, rows: list[tuple[Any, ...]]) -> None:
        """Append rows already in wire order `(at, kind, task_id, name, queue, attempt, duration, error,
        received[, workflow])`: one call for a whole settled batch, off the per-task path."""
        events = self._events
        over = len(events) + len(rows) - self.capacity
        if over > 0:
            self.dropped += over
        events.extend(rows)

    def drain(self) -> bytes | None:
        """Everything buffered so far as one encoded batch, or None if empty."""
        out: list[Any] = [self.worker]
        pop = self._events.popleft
        try:
            while True:
                out.append(pop())
        except IndexError:
            pass
        return _encode(out) if len(out) > 1 else None


def decode_batch(data: bytes) -> list[Event]:
    """The events of one batch; raises msgspec.DecodeError for bytes that are not a batch."""
    items = _decode_json(data) if data[:1] == b"[" else _decode(data)
    if not items or not isinstance(items[0], str):
        raise msgspec.DecodeError("an event batch starts with its worker id")
    worker = items[0]
    return [Event(w.at, w.kind, worker, w.task_id, w.name, w.queue, w.attempt, w.duration, w.error, w.received,
                  w.workflow) for w in items[1:] if isinstance(w, _Wire)]


def iter_events(batches: list[tuple[int, bytes]]) -> Iterator[Event]:
    """Every event of these batches in order, skipping batches that do not decode (an older format)."""
    for _, data in batches:
        try:
            yield from decode_batch(data)
        except msgspec.DecodeError:
            continue
