"""Sleep until a SQLite database's write-ahead log is written, so an idle consumer need not poll.

On Linux this is inotify on the ``-wal`` file: a commit by any process on the machine appends to
it, which ends the sleep at once. Elsewhere, or when inotify is unavailable (the per-user instance
limit, a missing file), the sleep is a plain short one and the caller polls as before.
"""

from __future__ import annotations

import math
import os
import threading
import time

try:  # Linux only; the wheel is pure Python over libc
    from inotify_simple import INotify, flags
except (ImportError, OSError, AttributeError):  # pragma: no cover - not Linux
    INotify = None

POLL_EVERY = 0.025  # the longest plain sleep, where nothing can wake us early

if INotify is not None:
    _WRITTEN = int(flags.MODIFY)
    _MOVED = int(flags.DELETE_SELF | flags.MOVE_SELF)
    _GONE = _MOVED | int(flags.IGNORED)  # IGNORED: the kernel dropped the watch


class WalWatch:
    """A sleep that ends early when `wal` is written, by any process (this one included).

    One thread sleeps on the watch at a time; another that asks meanwhile gets a plain short sleep.
    After a fork the child makes its own inotify instance (the parent's would share its events).
    """

    def __init__(self, wal: str) -> None:
        self._wal = wal
        self._lock = threading.Lock()
        self._inotify: INotify | None = None
        self._watch: int | None = None
        self._pid = os.getpid()
        self._usable = INotify is not None

    @property
    def watching(self) -> bool:
        """Whether sleeps can end early (inotify works here); False means plain polling."""
        return self._usable

    def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True if the log was written meanwhile (look again, closely)."""
        if not self._usable or not self._lock.acquire(blocking=False):
            time.sleep(min(seconds, POLL_EVERY))
            return False
        try:
            inotify = self._ready()
            if inotify is None:
                time.sleep(min(seconds, POLL_EVERY))
                return False
            written = False
            for event in inotify.read(timeout=math.ceil(seconds * 1000)):
                if event.mask & _GONE:  # the file was removed or replaced: watch the new one next time
                    self._watch = None
                written = written or bool(event.mask & _WRITTEN)
            return written
        finally:
            self._lock.release()

    def _ready(self) -> INotify | None:
        if self._pid != os.getpid():  # forked: our copy of the parent's descriptor is not ours to read
            self._drop()
            self._pid = os.getpid()
        if self._inotify is None:
            try:
                self._inotify = INotify()
            except OSError:  # the per-user limit on inotify instances: poll instead, for good
                self._usable = False
                return None
        if self._watch is None:
            try:
                self._watch = self._inotify.add_watch(self._wal, _WRITTEN | _MOVED)
            except OSError:  # no log file yet (no connection open): poll this time
                return None
        return self._inotify

    def _drop(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
        self._inotify, self._watch = None, None

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                self._drop()
