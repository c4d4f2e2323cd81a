"""The SQLite broker (`sqlite:///relative.db`, `sqlite:////abs.db`): queue and result store in one file.

Its parts: `schema.py` (tables, version, the checks that refuse a foreign file), `pool.py` (connections,
transactions, driver errors), `store.py` (the store half), `queue.py` (the queue half, built on the store
half), `watch.py` (the write-ahead-log watch an idle reader sleeps on).
"""

from __future__ import annotations

import os
import threading
import time
import weakref

from ...errors import InvalidURL
from ..base import Features
from ..shared import KeepsOwnBooks, choice, url_options
from .pool import Pool, finalize
from .queue import SQLiteQueue
from .schema import boot_id, prepare
from .watch import WalWatch

__all__ = ["SQLiteBroker"]


def _synchronous(text: str) -> str:
    return choice("normal", "full")(text.lower())


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("must be a number of seconds") from None


OPTIONS = {"synchronous": _synchronous, "busy_timeout": _seconds}


class SQLiteBroker(KeepsOwnBooks, SQLiteQueue):
    """Queue and Store in one SQLite file, shared by every process on the machine.

    Guarantees: WAL mode, safe for many producer and worker processes on one machine; every
    publish, ack, nack and dead-letter is one committed transaction, so a SIGKILL of any process
    loses nothing committed. With the default `synchronous=NORMAL` a power loss or OS crash may roll
    back the last transactions before a checkpoint; `?synchronous=full` makes each commit durable.
    Non-guarantees: one machine only (SQLite over a network filesystem is not safe).

    Round trips per message, amortised: publish 1 transaction per batch; fetch 1 read + 1
    transaction per batch (claims up to `limit` rows with UPDATE … RETURNING); ack 1 transaction per
    batch; results 1 transaction per batch. An idle consumer (and a waiting `get()`) sleeps on the
    write-ahead log (inotify, watch.py): any process's commit wakes it at once; otherwise one
    cheap read every 0.25 s. Without inotify it polls every 25 ms.
    """

    features = Features(acks_with_results=True, derives_states=True)
    aio = None  # asyncio code calls it on a thread (a C library: it would block the loop)

    def __init__(self, path: str, *, synchronous: str = "normal", busy_timeout: float = 60.0,
                 url: str | None = None) -> None:
        if synchronous.lower() not in ("normal", "full"):
            raise ValueError(f"synchronous={synchronous!r}: use 'normal' or 'full'")
        self.path = path
        self.url = url or f"sqlite:///{path}"
        self._pool = Pool(path, busy_timeout, synchronous.upper())
        self._watch = WalWatch(f"{path}-wal")
        self._looking = threading.local()
        self._finalizer = weakref.finalize(self, finalize, self._pool, self._watch)
        self._wall = time.time
        boot = boot_id()
        # Leases: CLOCK_MONOTONIC is one clock for every process of a boot, immune to wall-clock jumps;
        # where the boot cannot be identified, leases fall back to wall time.
        self._lease_clock = time.monotonic if boot else time.time
        prepare(self._pool, path, busy_timeout, boot)

    @classmethod
    def from_url(cls, url: str) -> SQLiteBroker:
        """Open the file a `sqlite://` URL names, with its options (`synchronous=normal|full`,
        `busy_timeout=SECONDS`), or raise InvalidURL saying what is wrong with the URL."""
        rest = url.split("://", 1)[1]
        if not rest.startswith("/") or len(rest) < 2:
            raise InvalidURL(f"{url!r}: a SQLite URL is sqlite:///relative/path.db (three slashes) or "
                             "sqlite:////absolute/path.db (four)")
        path = rest[1:].partition("?")[0]
        options, _ = url_options(url, OPTIONS, shown=url)
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise InvalidURL(f"{url!r}: folder {parent} does not exist")
        return cls(path, url=url, **options)

    def close(self) -> None:
        self._finalizer()
