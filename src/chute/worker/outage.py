"""Broker errors logged at most once a second per process while a broker is down.

An outage makes every loop of a worker fail at once (fetch, lease renewal, heartbeat, events):
logged one by one, that is several lines a second per process, burying the one that matters.
Errors inside an outage are counted instead, and its end is logged once with the count.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any


class OutageLog:
    """Rate-limited error logging with one "reachable again" line when the outage ends."""

    def __init__(self, log: logging.Logger, every: float = 1.0) -> None:
        self._log = log
        self._every = every
        self._lock = threading.Lock()
        self._started = 0.0  # monotonic start of the current outage; 0 when none
        self._last = 0.0
        self.suppressed = 0

    def error(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if not self._started:
                self._started = now
            if now - self._last < self._every:
                self.suppressed += 1
                return
            self._last = now
        self._log.error(message, *args)

    def recovered(self) -> None:
        """Call after a broker call succeeded; logs the end of an outage, if one was going on."""
        if not self._started:  # the common case: one attribute read
            return
        with self._lock:
            started, suppressed = self._started, self.suppressed
            self._started, self.suppressed, self._last = 0.0, 0, 0.0
        if started:
            self._log.warning("broker reachable again after %.1f s (%d similar errors not shown)",
                              time.monotonic() - started, suppressed)
