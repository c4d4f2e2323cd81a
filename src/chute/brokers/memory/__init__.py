"""The memory broker (`memory://`): queue and result store in one process's memory, for tests and eager
development. Its parts: `store.py` (the store half), `queue.py` (the queue half, built on it)."""

from __future__ import annotations

from ..base import Features
from ..shared import KeepsOwnBooks
from .queue import MemoryQueue

__all__ = ["MemoryBroker"]


class MemoryBroker(KeepsOwnBooks, MemoryQueue):
    """Queue and Store in one process's memory.

    Guarantees: the same delivery semantics as every broker (leases, fencing, priorities, ETAs,
    dead-lettering) within one process. Non-guarantees: nothing survives the process; other
    processes cannot see it. Round trips: none (a lock and a condition variable).
    """

    features = Features(acks_with_results=True, derives_states=True)
    aio = None  # asyncio code calls it on a thread

    def __init__(self, url: str = "memory://") -> None:
        super().__init__()
        self.url = url

    def close(self) -> None:
        pass
