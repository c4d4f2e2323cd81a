"""The Queue protocol: what chute needs from a message broker, and what a broker declares it does natively.

Queues move opaque bytes (encoded envelopes); they never decode them. What a task's messages leave
behind (results, cancellations, leases, the worker registry, events) is kept by a Store
(`brokers/store.py`); any queue pairs with any store. What a broker cannot do
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
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import msgspec

from .features import Features

if TYPE_CHECKING:
    from ..results import ResultRecord
    from .store import Store

__all__ = ["AsyncQueue", "DeadLetter", "Delivery", "Features", "Outgoing", "Queue", "QueueStats"]


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
    cancelled: bool = False  # its task was cancelled when it was fetched (`Features.cancellation_at_fetch`)


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


@runtime_checkable
class AsyncQueue(Protocol):
    """A queue's native asyncio side (redis.asyncio, RabbitMQ's own client); without one, asyncio code runs
    the sync calls on a thread."""

    async def publish(self, messages: Sequence[Outgoing]) -> list[str]:
        """`Queue.publish`, awaiting."""
        ...

    async def aclose(self) -> None:
        """Close what the running event loop holds."""
        ...


@runtime_checkable
class Queue(Protocol):
    """Durable queues with leases, delays, priorities and a dead-letter queue per queue."""

    url: str  # with any password masked

    @property
    def features(self) -> Features:
        """What it does natively: declared by its class."""
        ...

    @property
    def aio(self) -> AsyncQueue | None:
        """Its native asyncio side, or None."""
        ...

    def bind(self, store: Store) -> None:
        """The App's store, given once when the App opens: a queue that keeps no bookkeeping of its own
        (RabbitMQ: idempotency claims, counters, the registry it reads its workers' holdings from)
        keeps it there. A queue that needs nothing ignores it."""
        ...

    def publish(self, messages: Sequence[Outgoing]) -> list[str]:
        """Store every message or none (one atomic batch); return the id each one is known by.

        A message whose idempotency key is still claimed in its queue (`shared.idempotency_slot`) is
        not stored again: the id returned is the one that claimed it first. A message with a `topic`
        is an event: it is copied, in the same batch, to the queue of every subscriber group declared
        with a matching pattern (`shared.fan_out`), with id `<id>:<group>`; an event no group matches
        is counted (`shared.unrouted_key`), not an error. A message with `max_length` is refused with
        QueueFull (the whole batch, nothing stored) when its queue already holds that many waiting
        messages, or, with `on_full="drop_oldest"`, makes room by deleting the queue's oldest waiting
        messages (counted as `chute.dropped:<queue>`). Raises BrokerUnavailable if nothing was stored.
        """
        ...

    def declare_group(self, group: str, patterns: Sequence[str]) -> None:
        """Subscribe a group to topic patterns; from now on it receives every matching event,
        whether or not its workers are running (its queue is `chute.topics.group_queue(group)`)."""
        ...

    def fetch(self, queues: Sequence[str], limit: int, lease: float, timeout: float) -> list[Delivery]:
        """Claim up to `limit` due messages, highest priority first, for `lease` seconds.

        Waits up to `timeout` seconds for the first one; returns [] if none came. With
        `Features.cancellation_at_fetch`, marks each delivery whose task was cancelled.
        """
        ...

    def ack(self, deliveries: Sequence[Delivery], results: Sequence[ResultRecord] = ()) -> int:
        """Remove delivered messages for good; return how many were still held by their claim.

        `results` are given only with `Features.acks_with_results` when this queue is also the store:
        they are written in the same transaction.
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

    def beat(self, worker_id: str) -> tuple[dict[str, int], dict[str, int]]:
        """With each heartbeat of a worker of this process: keep its connection alive, and say, per
        queue, what the connection holds that the server counts as delivered, for a queue that cannot
        count it server-side (RabbitMQ): (handed out under a lease, prefetched). Empty for the others."""
        ...

    def stopped(self, worker_id: str) -> None:
        """A worker of this process stopped: give back at once what was prefetched for it."""
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

    def close(self) -> None:
        """Release connections; the queue may not be used afterwards."""
        ...
