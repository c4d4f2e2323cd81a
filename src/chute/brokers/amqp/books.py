"""Where the RabbitMQ broker keeps what RabbitMQ cannot: the App's Store it is bound to.

Idempotency claims, QUEUED marks, counters, and the registries of queues and delay levels (AMQP
cannot list queues) live there. An unbound broker opens `default_store_url` when first needed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..base import Outgoing
from ..shared import idempotency_slot, queued_marks
from ..store import Store


class Books:
    """The store a broker keeps its bookkeeping in, and the few things it keeps there."""

    def __init__(self, url: str) -> None:
        self.url = url  # masked
        self.bound: Store | None = None
        self._owned = False
        self._registered: dict[tuple[str, str], int] = {}

    def bind(self, store: Store) -> None:
        if self._owned and self.bound is not None and self.bound is not store:
            self.bound.close()
        self.bound, self._owned = store, False

    def store(self) -> Store:
        """The bound store, or the default one, opened now."""
        if self.bound is None:
            from .. import open_store

            self.bound, self._owned = open_store(self.url), True  # what an App on this URL would open
        return self.bound

    def close(self) -> None:
        if self._owned and self.bound is not None:
            self.bound.close()

    # -- what is kept there ---------------------------------------------------------------------
    def mark_queued(self, messages: Sequence[Outgoing]) -> None:
        """QUEUED marks for tasks without a record, written before the messages exist (so no worker's
        STARTED can come first): RabbitMQ cannot answer for a task it holds, as SQLite and Redis do.
        One batch write; a publish that then fails leaves marks for a day."""
        if messages:
            self.store().queued(queued_marks(messages))

    def claim_key(self, m: Outgoing) -> str | None:
        """None if `m` claimed its idempotency key now; else the id of the message that holds it."""
        store = self.store()
        assert m.idempotency_key is not None
        name = f"chute.idempotency:{idempotency_slot(m.queue, m.idempotency_key)}"
        if store.acquire_lease(name, m.id, max(m.idempotency_window, 0.001)):
            store.set_meta(name, f"{m.id} {time.time() + m.idempotency_window}")
            return None
        deadline = time.monotonic() + 1.0
        while True:  # the holder writes its id right after taking the key
            held = (store.get_meta(name) or "").split(" ")
            if len(held) == 2 and float(held[1]) > time.time() or time.monotonic() > deadline:
                return held[0] or m.id
            time.sleep(0.005)

    def registry(self, key: str) -> dict[str, int]:
        """A registry in meta: one `name<TAB>level` a line."""
        out: dict[str, int] = {}
        for line in (self.store().get_meta(key) or "").split("\n"):
            name, _, level = line.partition("\t")
            if name:
                out[name] = int(level) if level.lstrip("-").isdigit() else 0
        return out

    def register(self, key: str, name: str, level: int = 0) -> None:
        """Add a name (with a level: delays) to a registry, once per process; read back to merge with a
        concurrent writer."""
        if self._registered.get((key, name), -1) >= level:
            return
        for _ in range(5):
            names = self.registry(key)
            if names.get(name, -1) >= level:
                break
            names[name] = level
            self.store().set_meta(key, "\n".join(f"{n}\t{v}" for n, v in sorted(names.items())))
        self._registered[(key, name)] = level
