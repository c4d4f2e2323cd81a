"""Transactional outbox: a message is sent if and only if the application's transaction commits.

Producers insert outbox rows in their own database transaction (adapters: `chute.outbox.sqlalchemy`,
`chute.outbox.django`); a relay (in the worker or its own process) publishes committed rows to the
broker and deletes them. Each row is published with the idempotency key `outbox:<row id>`, so a
relay killed between publishing and deleting publishes the row again at most once more and the
broker stores it once (within the App's idempotency window); the worker acknowledges a redelivered
keyed message whose task already succeeded without running it. Rows that cannot be decoded are
set aside with a reason instead of blocking the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..brokers.base import Outgoing
from ..errors import ChuteError
from ..task import Signature

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("chute.outbox")
TABLE = "chute_outbox"


@dataclass(frozen=True)
class Row:
    """One pending message, as stored in the application's database."""

    id: str
    queue: str
    body: bytes
    priority: int = 0
    eta: float | None = None
    topic: str | None = None
    created: float = 0.0


def task_row(app: App, call: Signature) -> Row:
    """Build (and validate: SerializationError, PayloadTooLarge) the row for a task call."""
    options = {k: v for k, v in call.options.items() if k != "idempotency_key"}
    env, out = app.producer.envelope(app.get_task(call.task), tuple(call.args), dict(call.kwargs), options,
                                     time.time())
    return Row(env.id, out.queue, out.body, out.priority, out.eta, None, env.created)


def event_row(app: App, topic: str, payload: Any) -> Row:
    out = app.producer.event(topic, payload)
    return Row(out.id, "", out.body, out.priority, None, topic, time.time())


class Store(Protocol):
    """What a relay needs from the application's database."""

    def claim(self, limit: int) -> list[Row]:
        """The oldest pending rows, locked for this relay where the database can (SKIP LOCKED)."""
        ...

    def done(self, ids: Sequence[str]) -> None:
        """Delete relayed rows and commit (ends the transaction `claim` began)."""
        ...

    def set_aside(self, row_id: str, reason: str) -> None:
        """Mark a row that cannot be relayed, with the reason, so it is not tried again."""
        ...


def relay_batch(app: App, store: Store, limit: int = 100) -> int:
    """Publish up to `limit` committed rows, then delete them; return how many were relayed."""
    rows = store.claim(limit)
    if not rows:
        store.done([])
        return 0
    good: list[Row] = []
    for row in rows:
        try:
            app.codec.decode(row.body)
        except ChuteError as exc:
            log.error("outbox row %s cannot be relayed: %s; set aside", row.id, exc)
            store.set_aside(row.id, f"decode_error: {exc}")
            continue
        good.append(row)
    outs = [app.producer.limited(Outgoing(r.queue, r.id, r.body, r.priority, r.eta, f"outbox:{r.id}",
                                          max(app.idempotency_window, 3600.0), topic=r.topic)) for r in good]
    if outs:
        app.producer.publish(outs)  # the one send path: a full queue's policy holds for the relay too
    store.done([r.id for r in rows if r in good])
    return len(good)


def run_relay(app: App, store: Store, *, stop: Any = None, limit: int = 100, idle: float = 0.05) -> None:
    """Relay until `stop` (a threading.Event) is set, sleeping up to `idle` seconds when empty."""
    pause = 0.001
    while stop is None or not stop.is_set():
        try:
            n = relay_batch(app, store, limit)
        except ChuteError as exc:
            log.error("outbox relay: %s; retrying", exc)
            n = 0
            time.sleep(1.0)
        if n:
            pause = 0.001
            continue
        time.sleep(pause)
        pause = min(pause * 2, idle)
