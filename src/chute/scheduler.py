"""Periodic tasks and the scheduler that sends them: one active scheduler at a time, no tick twice.

Ticks are **slots**: deterministic instants (multiples of the interval since the epoch, or the
cron expression's times in its time zone). A slot is sent with the idempotency key
`chute.periodic:<name>:<slot>`, so even two schedulers that both believe they lead (a paused
leader waking up) cannot send one slot twice. Leadership is a lease in the result store, renewed
every lease/3; if the leader dies another takes over within one lease period, and resumes after
the last slot sent: slots missed by less than `catch_up` seconds (a leader change, clocks that
differ between the schedulers' machines) are all sent; older ones follow the task's `missed`
policy (downtime).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from .envelope import new_id
from .errors import ChuteError
from .schedule import Periodic

if TYPE_CHECKING:
    from .core import Core

__all__ = ["Periodic", "Scheduler"]

log = logging.getLogger("chute.scheduler")


class Scheduler:
    """Sends an App's periodic tasks while it holds the scheduler lease."""

    LOCK = "chute.scheduler"
    ACTIVE = "chute.scheduler:active"  # meta: the leader's self-description, for `chute status` and the dashboard

    def __init__(self, app: Core, *, lease: float = 10.0, clock: Callable[[], float] = time.time,
                 catch_up: float = 300.0) -> None:
        self.app = app
        self.lease = lease
        self.clock = clock
        self.catch_up = catch_up
        self.id = new_id()
        self.leading = False
        self.sent = 0
        self.since = 0.0
        self._stop = threading.Event()
        self._next: dict[str, float] = {}

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())

    def run(self) -> None:
        """Until stopped: compete for the lease; while leading, send every slot that falls due."""
        renew_every = self.lease / 3
        next_renew = 0.0
        try:
            while not self._stop.is_set():
                if time.monotonic() >= next_renew:
                    self._hold_lease()
                    next_renew = time.monotonic() + renew_every
                wait = renew_every
                if self.leading:
                    wait = min(wait, self._send_due())
                self._stop.wait(max(0.01, min(wait, next_renew - time.monotonic())))
        finally:
            if self.leading:
                try:
                    self.app.results.release_lease(self.LOCK, self.id)
                    self._describe(stopped=True)
                except ChuteError:
                    pass

    def _hold_lease(self) -> None:
        try:
            leading = self.app.results.acquire_lease(self.LOCK, self.id, self.lease)
        except ChuteError as exc:
            log.error("could not renew the scheduler lease: %s", exc)
            leading = False
        if leading and not self.leading:
            log.info("scheduler %s is now active", self.id)
            self.since = time.time()
            self._next = {name: self._first_slot(p) for name, p in self.app.schedules.items()}
        elif self.leading and not leading:
            log.warning("scheduler %s lost the lease; standing by", self.id)
        self.leading = leading
        if leading:
            try:
                self._describe()
            except ChuteError as exc:
                log.warning("could not describe the active scheduler: %s", exc)

    def _describe(self, stopped: bool = False) -> None:
        self.app.results.set_meta(self.ACTIVE, json.dumps({
            "id": self.id, "hostname": socket.gethostname(), "pid": os.getpid(), "since": self.since,
            "renewed_at": 0.0 if stopped else time.time(), "lease": self.lease}))

    def _first_slot(self, p: Periodic) -> float:
        """Where to resume: after the last slot sent, with missed slots skipped or run once."""
        now = self.clock()
        last = self.app.results.get_meta(f"chute.periodic:{p.name}:last")
        if last is None:
            return p.next_slot(now)
        nxt = p.next_slot(float(last))
        if nxt > now or now - nxt <= self.catch_up:  # a leader change or clock skew, not downtime: send each
            return nxt
        if p.missed == "run_once":  # send the latest missed slot once, then carry on from now
            latest = nxt
            while (following := p.next_slot(latest)) <= now:
                latest = following
            return latest
        log.info("%s: skipping slots missed while no scheduler ran", p.name)
        return p.next_slot(now)

    def _send_due(self) -> float:
        """Send every due slot; return seconds until the next one."""
        now = self.clock()
        soonest = math.inf
        for name, p in self.app.schedules.items():
            slot = self._next.get(name) or p.next_slot(now)
            if slot <= now:
                try:
                    p.task.send(p.args, p.kwargs, idempotency_key=f"chute.periodic:{name}:{slot:.3f}")
                    self.app.results.set_meta(f"chute.periodic:{name}:last", repr(slot))
                    self.sent += 1
                    log.info("sent %s for %s", name, datetime.fromtimestamp(slot, p.tz).isoformat())
                except ChuteError as exc:
                    log.error("could not send %s: %s; trying again", name, exc)
                    return 1.0
                slot = p.next_slot(slot)
            self._next[name] = slot
            soonest = min(soonest, slot - now)
        return soonest
