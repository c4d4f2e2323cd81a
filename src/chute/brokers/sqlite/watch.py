"""Sleep until a SQLite database's write-ahead log is written, so an idle consumer need not poll.

On Linux this is inotify on the ``-wal`` file: a commit by any process on the machine appends to
it, which ends the sleep at once. Elsewhere, in a gevent-patched process (whose sleeps must stay
cooperative), or when inotify is unavailable (the per-user instance limit, a missing file), the
sleep is a plain short one and the caller polls as before.

The two inotify calls are made through ctypes on the process's own libc. (The inotify_simple wheel
was tried first: it finds libc with ctypes.util.find_library, which runs `/sbin/ldconfig -p` in a
subprocess in every process that watches, and that hung in a gevent threadpool thread.)
"""

from __future__ import annotations

import ctypes
import math
import os
import select
import struct
import sys
import threading
import time

POLL_EVERY = 0.025  # the longest plain sleep, where nothing can wake us early
FIRST_GAP = 0.0005  # seconds before the first look again after a commit; doubles per empty look
LOOK_CLOSELY = 0.06  # after a commit, keep looking again on those gaps this long, with no further commit
QUIET_AT_MOST = 0.25  # a quiet sleep's longest: also how late a stepped wall clock (an ETA's) is seen

_MODIFY, _DELETE_SELF, _MOVE_SELF, _IGNORED = 0x2, 0x400, 0x800, 0x8000  # <sys/inotify.h>
_WRITTEN, _MOVED = _MODIFY, _DELETE_SELF | _MOVE_SELF
_GONE = _MOVED | _IGNORED  # IGNORED: the kernel dropped the watch
_NONBLOCK, _CLOEXEC = os.O_NONBLOCK, getattr(os, "O_CLOEXEC", 0)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (a name of len bytes follows)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # this process's libc: no search, no subprocess
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        return libc
    except (OSError, AttributeError):  # pragma: no cover - a libc without inotify
        return None


LIBC = _libc()


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("time"))


class WalWatch:
    """A sleep that ends early when `wal` is written, by any process (this one included).

    One thread sleeps on the watch at a time; another that asks meanwhile gets a plain short sleep.
    After a fork the child makes its own inotify instance (the parent's would share its events).
    """

    def __init__(self, wal: str) -> None:
        self._wal = wal
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._poll: select.poll | None = None
        self._watch: int | None = None
        self._pid = os.getpid()
        self._usable = LIBC is not None and not _gevent_patched()

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
            fd = self._ready()
            if fd is None:
                time.sleep(min(seconds, POLL_EVERY))
                return False
            assert self._poll is not None
            if not self._poll.poll(math.ceil(seconds * 1000)):
                return False
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return False
            written, at = False, 0
            while at + _EVENT.size <= len(data):
                _, mask, _, length = _EVENT.unpack_from(data, at)
                at += _EVENT.size + length
                if mask & _GONE:  # the file was removed or replaced: watch the new one next time
                    self._watch = None
                written = written or bool(mask & _WRITTEN)
            return written
        finally:
            self._lock.release()

    def _ready(self) -> int | None:
        assert LIBC is not None
        if self._pid != os.getpid():  # forked: our copy of the parent's descriptor is not ours to read
            self._drop()
            self._pid = os.getpid()
        if self._fd is None:
            fd = LIBC.inotify_init1(_NONBLOCK | _CLOEXEC)
            if fd < 0:  # the per-user limit on inotify instances (EMFILE): poll instead, for good
                self._usable = False
                return None
            self._fd, self._poll = fd, select.poll()
            self._poll.register(fd, select.POLLIN)
        if self._watch is None:
            wd = LIBC.inotify_add_watch(self._fd, os.fsencode(self._wal), _WRITTEN | _MOVED)
            if wd < 0:  # no log file yet (no connection open): poll this time
                return None
            self._watch = wd
        return self._fd

    def _drop(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._poll, self._watch = None, None, None

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                self._drop()


class IdleLooks:
    """When an idle reader of the database looks again (one per reading thread).

    Quiet, it sleeps on the watch until some process commits (or QUIET_AT_MOST). A commit is seen a
    moment before it is visible (the log is written before its index; longer with synchronous=FULL's
    fsync), so after each one it looks at once, then again on gaps doubling from FIRST_GAP for
    LOOK_CLOSELY. Commits that keep waking it for nothing (a busy queue beside this idle one) are
    noise: after NOISE of them in a row its looks are spaced out, doubling up to POLL_EVERY, so it
    looks about as often as a 25 ms poll would, not once per commit.
    """

    NOISE = 4

    __slots__ = ("follow", "looked", "misses", "until", "woken")

    def __init__(self) -> None:
        self.follow, self.looked, self.misses, self.until, self.woken = FIRST_GAP, 0.0, 0, 0.0, False

    def found(self) -> None:
        """The last look found something: look closely next time too."""
        self.follow, self.misses, self.woken = FIRST_GAP, 0, False
        self.until = time.monotonic() + LOOK_CLOSELY

    def missed(self) -> None:
        """The look just made found nothing."""
        self.looked = time.monotonic()
        if self.woken:  # a commit woke it, not one for this reader
            self.misses += 1
        else:
            self.follow = min(self.follow * 2, POLL_EVERY)
        self.woken = False

    def sleep(self, watch: WalWatch, at_most: float) -> None:
        """Sleep until the next look is due, for at most `at_most` seconds (none if it is not positive:
        a lease that ended while another worker took it back leaves a due time already past)."""
        at_most = max(0.0, at_most)
        closely = time.monotonic() < self.until
        if not watch.sleep(min(at_most, self.follow if closely else QUIET_AT_MOST)):
            return
        now = time.monotonic()
        self.woken, self.follow, self.until = True, FIRST_GAP, now + LOOK_CLOSELY
        if self.misses >= self.NOISE:
            spacing = min(FIRST_GAP * 2 ** min(self.misses - self.NOISE, 8), POLL_EVERY)
            early = self.looked + spacing - now
            if early > 0:
                time.sleep(min(early, at_most))
