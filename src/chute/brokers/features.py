"""Features: what a broker declares it does natively, as typed data read by the App and the worker."""

from __future__ import annotations

import msgspec


class Features(msgspec.Struct, frozen=True):
    """What a broker does natively, declared by its class (never probed). The first three hold only when
    the broker is also the App's store (`Pairing`): they fold a store's step into a queue's round trip."""

    acks_with_results: bool = False  # `ack(deliveries, results)` writes both in one transaction
    cancellation_at_fetch: bool = False  # `fetch` marks `Delivery.cancelled` in the same call
    derives_states: bool = False  # as a store, answers QUEUED and STARTED from the messages it holds
    marks_started: bool = False  # as a store, `started` writes the STARTED marks itself (in its one round trip)
    marks_queued: bool = False  # `publish` records QUEUED in the store it is bound to (RabbitMQ)
    publish_overlap: int = 1  # asyncio publish batches worth having in flight at once (RabbitMQ: confirms)
    socket_io: bool = False  # all its I/O is Python sockets: cooperative once gevent patched them
