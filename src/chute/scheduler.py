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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .envelope import new_id
from .errors import ChuteError, ConfigurationError

if TYPE_CHECKING:
    from .app import App
    from .task import Task

log = logging.getLogger("chute.scheduler")
Missed = Literal["skip", "run_once"]


@dataclass
class Periodic:
    """A task sent on a schedule: every N seconds, or on a cron expression in a time zone."""

    task: Task[Any, Any]
    every: float | None = None
    cron: str | None = None
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    missed: Missed = "skip"
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.task.name

    @classmethod
    def declare(cls, task: Task[Any, Any], every: float | timedelta | None, cron: str | None, tz: str,
                missed: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Periodic:
        """Validate a declaration, naming what is wrong."""
        where = f"periodic task {task.name}"
        if (every is None) == (cron is None):
            raise ConfigurationError(f"{where}: give exactly one of every= or cron=")
        if missed not in ("skip", "run_once"):
            raise ConfigurationError(f"{where}: missed={missed!r}; use 'skip' or 'run_once'")
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(f"{where}: unknown time zone {tz!r} (use an IANA name like 'Europe/Paris')") \
                from None
        seconds = every.total_seconds() if isinstance(every, timedelta) else every
        if seconds is not None and (not math.isfinite(seconds) or seconds <= 0):
            raise ConfigurationError(f"{where}: every= must be a positive duration, not {every!r}")
        if cron is not None:
            from croniter import croniter

            if not isinstance(cron, str) or not croniter.is_valid(cron):
                raise ConfigurationError(f"{where}: {cron!r} is not a valid cron expression "
                                         "(five fields: minute hour day-of-month month day-of-week)")
        return cls(task, seconds, cron, zone, missed, args, kwargs)  # type: ignore[arg-type]

    def next_slot(self, after: float) -> float:
        """The first slot strictly after `after` (unix seconds)."""
        if self.every is not None:
            return (math.floor(after / self.every) + 1) * self.every
        from croniter import croniter

        assert self.cron is not None
        fixed_hour = self.cron.split()[1] != "*"
        it = croniter(self.cron, datetime.fromtimestamp(after, self.tz))
        while True:
            candidate: datetime = it.get_next(datetime)
            # In a repeated hour (clocks turned back), a job with a fixed hour runs once, not twice.
            if fixed_hour and _second_occurrence(candidate, self.tz):
                continue
            return candidate.timestamp()


def _second_occurrence(moment: datetime, tz: ZoneInfo) -> bool:
    wall = moment.replace(tzinfo=None)
    return wall.replace(tzinfo=tz, fold=0).timestamp() != moment.timestamp()


class Scheduler:
    """Sends an App's periodic tasks while it holds the scheduler lease."""

    LOCK = "chute.scheduler"
    ACTIVE = "chute.scheduler:active"  # meta: the leader's self-description, for `chute status` and the dashboard

    def __init__(self, app: App, *, lease: float = 10.0, clock: Callable[[], float] = time.time,
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
