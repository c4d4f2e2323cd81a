"""Pairing: what a queue and a store do together, decided once when an App opens them."""

from __future__ import annotations

from typing import Protocol

import msgspec

from .base import AsyncQueue, Queue
from .store import AsyncStore, Store


class AsyncBroker(AsyncQueue, AsyncStore, Protocol):
    """The asyncio side of a broker that is both queue and store (Redis)."""



class Pairing(msgspec.Struct, frozen=True):
    """Who does what when a queue and a store work together, computed once when the App opens them.

    A broker that is its own store folds steps into its round trips (results with the ack, cancellation
    at fetch, states derived from its messages); any other pairing has the QUEUED and STARTED marks
    written above it, so a task's state reads the same whichever pair runs it.
    """

    acks_with_results: bool = False  # the worker acks and writes results in one call
    cancellation_at_fetch: bool = False  # fetched deliveries already say whether they were cancelled
    store_sees_messages: bool = False  # the store derives a task's state from its message (memory, SQLite)
    producer_marks_queued: bool = False  # the producer writes QUEUED before publishing
    recorder_marks_started: bool = False  # STARTED marks are written by chute.marks (batched with outcomes)

    @classmethod
    def of(cls, queue: Queue, store: Store) -> Pairing:
        same = queue is store  # type: ignore[comparison-overlap]  # one broker object may be both
        f = queue.features
        return cls(acks_with_results=same and f.acks_with_results,
                   cancellation_at_fetch=same and f.cancellation_at_fetch,
                   store_sees_messages=same and f.derives_states,
                   producer_marks_queued=not same and not f.marks_queued,
                   recorder_marks_started=not (same and f.derives_states) and not store.features.marks_started)
