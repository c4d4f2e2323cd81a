"""The worker's heartbeat thread: what must go on however busy the fetch loop and the tasks are.

Each tick: leases of held messages extended (every `every` seconds), the worker's info written,
events flushed (announcing tasks still waiting or running), cancellations polled and time limits
enforced (limits.py), expired results purged, and a worker whose supervisor died stopped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from ..brokers.base import Delivery
from ..brokers.store import WorkerInfo
from ..errors import ChuteError
from ..events import EventBuffer
from .job import Job
from .limits import CANCEL_CHECK_EVERY, Limits
from .outage import OutageLog

if TYPE_CHECKING:
    from ..core import Core

log = logging.getLogger("chute.worker")
EVENT_RETENTION = 3600.0
INFO_EVERY = 2.0  # seconds between worker-info heartbeats (status freshness), apart from lease renewals
FLUSH_EVERY = 0.5  # seconds between event flushes
PURGE_EVERY = 60.0  # seconds between purges of expired results


class Upkeep:
    """Runs on the heartbeat thread until `closed` is set; `beat` and `flush_events` also run alone."""

    def __init__(self, app: Core, held: dict[str, Job | Delivery], events: EventBuffer | None,
                 outage: OutageLog, limits: Limits, info: Callable[[], WorkerInfo], *, every: float,
                 supervisor: int | None, orphaned: Callable[[], None]) -> None:
        self.broker, self.results, self.lease, self.marks = app.broker, app.results, app.lease, app.marks
        self.events = events
        self.every = every
        self._held = held
        self._outage = outage
        self._limits = limits
        self._info = info
        self._supervisor = supervisor
        self._orphaned = orphaned

    def run(self, closed: threading.Event) -> None:
        start = time.monotonic()
        next_beat, next_info = start + self.every, start + INFO_EVERY
        next_cancel_check, next_flush, next_purge = start + CANCEL_CHECK_EVERY, start + FLUSH_EVERY, start + PURGE_EVERY
        while not closed.wait(min(0.1, self.every)):
            now = time.monotonic()
            if self._supervisor is not None and os.getppid() != self._supervisor:
                self._orphaned()
            if now >= next_flush:
                self.flush_events()
                next_flush = now + FLUSH_EVERY
            running = [j for j in self._held.copy().values() if isinstance(j, Job) and j.started]
            if now >= next_cancel_check:
                self._limits.poll_cancellations(running, now)
                next_cancel_check = now + CANCEL_CHECK_EVERY
            self._limits.enforce(running, now)
            if now >= next_beat:
                self.beat()
                next_beat, next_info = now + self.every, now + INFO_EVERY
            elif now >= next_info:
                self.publish_info()
                next_info = now + INFO_EVERY
            if now >= next_purge:
                try:
                    self.results.purge_expired()
                except ChuteError as exc:
                    self._outage.error("could not purge expired results: %s", exc)
                next_purge = now + PURGE_EVERY

    def beat(self) -> None:
        """Extend the lease of every held message, then write the worker's info."""
        deliveries = [h.delivery if isinstance(h, Job) else h for h in self._held.copy().values()]
        try:
            if deliveries:
                kept = self.broker.extend(deliveries, self.lease)
                for d, ok in zip(deliveries, kept, strict=True):
                    if not ok:
                        log.warning("lost the lease on %s (%s); another worker may run it", d.id, d.queue)
        except ChuteError as exc:
            self._outage.error("could not extend leases: %s", exc)
        self.publish_info()

    def publish_info(self) -> None:
        if self.events is not None:
            self.events.emit("worker-heartbeat")
        try:
            if self.marks is not None:
                self.marks.flush()
            info = self._info()
            held, prefetched = self.broker.beat(info.id)  # what a RabbitMQ connection holds, for `stats`
            self.results.heartbeat(msgspec.structs.replace(info, in_flight=held, prefetched=prefetched),
                                   ttl=3 * max(self.every, INFO_EVERY) + 1)
        except ChuteError as exc:
            self._outage.error("heartbeat failed: %s", exc)

    def flush_events(self) -> None:
        if self.events is None:
            return
        self._announce_waiting(self.events)
        batch = self.events.drain()
        if batch is not None:
            try:
                self.results.record_events(batch, EVENT_RETENTION)
            except ChuteError as exc:  # events are droppable; tasks are not
                self._outage.error("dropped a batch of events: %s", exc)

    def _announce_waiting(self, events: EventBuffer) -> None:
        """`received`/`started` events for tasks still waiting or running at a flush (once each), so
        long tasks show up live while a fast one costs only its outcome event."""
        now, mono = time.time(), time.monotonic()
        for job in list(self._held.copy().values()):
            if not isinstance(job, Job) or not job.received:
                continue
            told = job.extra.get("announced")
            kind = "started" if job.started else "received"
            if told == kind or told == "started":
                continue
            env = job.envelope
            at = now - (mono - job.started) if job.started else job.received
            events.emit(kind, env.id, env.name, env.queue, env.attempt, 0.0, "", job.received, at,
                        env.workflow.id if env.workflow is not None else "")
            job.extra["announced"] = kind
