"""The Broker protocol: the whole vocabulary chute needs from a message store.

Brokers move opaque bytes (encoded envelopes); they never decode them. What a broker cannot do
natively (retry policy, idempotency checks on redelivery, poison detection, time limits) is done
once above it, in the worker and the App.

Delivery semantics every broker must give (tests/conformance checks each one):
- at-least-once: a fetched message stays owned by its claim until acked, nacked, dead-lettered or
  released; if the lease runs out first, the message becomes available again;
- a claim is fenced: an ack, nack or extend with a stale claim (the lease ran out and someone else
  took the message) does nothing and reports it;
- higher priority first, then first in, first out within a priority;
- a message with an ETA is not delivered (not held by anyone) before it is due.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec


class Outgoing(msgspec.Struct, frozen=True):
    """One message to publish: its encoded body and what the broker needs to route it."""

    queue: str
    id: str  # the envelope id, unique per message
    body: bytes
    priority: int = 0  # 0..9, higher first
    eta: float | None = None  # unix seconds; deliver not before
    idempotency_key: str | None = None
    idempotency_window: float = 0.0  # seconds the key stays claimed
    topic: str | None = None  # an event: the broker copies it to every matching group's queue
    max_length: int | None = None  # the queue's limit of waiting (ready + delayed) messages
    on_full: str = "reject"  # at the limit: "reject" (QueueFull, nothing stored) or "drop_oldest"


class Delivery(msgspec.Struct):
    """A message handed to a consumer under a lease. `claim` fences every later operation on it."""

    queue: str
    id: str  # envelope id as stored by the broker
    body: bytes
    claim: str  # opaque fencing token for this delivery
    deliveries: int  # times the broker has handed out this message since it was last (re)queued
    tag: object = None  # broker-private handle (row id, stream entry id, delivery tag)
    cancelled: bool = False  # its task was cancelled when it was fetched (`checks_cancellation_at_fetch`)


class QueueStats(msgspec.Struct):
    """Counts for one queue; `ready` excludes delayed and in-flight messages."""

    queue: str
    ready: int = 0
    in_flight: int = 0
    delayed: int = 0
    dead: int = 0


class DeadLetter(msgspec.Struct):
    """A dead-lettered message: its raw bytes are kept, whatever they are."""

    queue: str
    id: str
    body: bytes
    reason: str
    dead_at: float


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
class Broker(Protocol):
    """Durable queues with leases, delays, priorities and a dead-letter queue per queue."""

    url: str  # with any password masked

    def publish(self, messages: Sequence[Outgoing]) -> list[str]:
        """Store every message or none (one atomic batch); return the id each one is known by.

        A message whose idempotency key is still claimed is not stored again: the id returned
        is the one that claimed it first. A message with a `topic` is an event: it is copied, in
        the same batch, to the queue of every subscriber group declared with a matching pattern
        (`chute.topics`), with id `<id>:<group>`; an event no group matches is counted, not an
        error. A message with `max_length` is refused with QueueFull (the whole batch, nothing
        stored) when its queue already holds that many waiting messages, or, with
        `on_full="drop_oldest"`, makes room by deleting the queue's oldest waiting messages (counted
        as `chute.dropped:<queue>`). Raises BrokerUnavailable if nothing was stored.
        """
        ...

    def declare_group(self, group: str, patterns: Sequence[str]) -> None:
        """Subscribe a group to topic patterns; from now on it receives every matching event,
        whether or not its workers are running (its queue is `chute.topics.group_queue(group)`)."""
        ...

    def fetch(self, queues: Sequence[str], limit: int, lease: float, timeout: float) -> list[Delivery]:
        """Claim up to `limit` due messages, highest priority first, for `lease` seconds.

        Waits up to `timeout` seconds for the first one; returns [] if none came. A broker that is
        also the App's result store may set `checks_cancellation_at_fetch = True` and mark each
        delivery whose task was cancelled (`Delivery.cancelled`) in the same call: the worker then
        skips its own check (a round trip) before running a batch.
        """
        ...

    def ack(self, deliveries: Sequence[Delivery]) -> int:
        """Remove delivered messages for good; return how many were still held by their claim.

        A broker that is also the App's result store may set `acks_with_results = True` and accept
        `ack(deliveries, results)`, writing both in one transaction: a batch settles in one round trip.
        """
        ...

    def nack(self, delivery: Delivery, body: bytes, retry_at: float) -> bool:
        """Put a message back with a new body (next attempt), due at `retry_at` (unix seconds)."""
        ...

    def release(self, deliveries: Sequence[Delivery]) -> int:
        """Give messages back at once, unchanged and not counted as delivered (worker shutdown)."""
        ...

    def dead_letter(self, delivery: Delivery, reason: str, body: bytes | None = None) -> bool:
        """Move a message to its queue's dead-letter queue with a reason; keep `body` or the original."""
        ...

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        """Renew leases for another `lease` seconds; False where the claim was lost."""
        ...

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Counts per queue (every known queue when `queues` is None)."""
        ...

    def dead_letters(self, queue: str | None = None, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        """Dead-lettered messages, oldest first, optionally of one queue."""
        ...

    def replay(self, queue: str | None = None, ids: Sequence[str] | None = None) -> int:
        """Move dead-lettered messages back to their queues, due now; return how many moved."""
        ...

    def purge_dead(self, queue: str | None = None, ids: Sequence[str] | None = None) -> int:
        """Delete dead-lettered messages for good; return how many."""
        ...

    def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        """Record a worker as alive for `ttl` seconds."""
        ...

    def worker_gone(self, worker_id: str) -> None:
        """Forget a worker that stopped cleanly."""
        ...

    def workers(self) -> list[WorkerInfo]:
        """Workers whose last heartbeat has not expired."""
        ...

    def record_events(self, batch: bytes, retention: float) -> None:
        """Append one encoded batch of lifecycle events (chute.events); keep `retention` seconds."""
        ...

    def read_events(self, after: int = 0, limit: int = 100) -> list[tuple[int, bytes]]:
        """Event batches after sequence number `after`, oldest first, as (sequence, batch)."""
        ...

    def close(self) -> None:
        """Release connections; the broker may not be used afterwards."""
        ...
