"""Taking work: fetch a batch under a lease, decode and check each message, then record the
runnable ones as started, learning which were cancelled, before any of them can finish."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..brokers.base import Delivery, Queue
from ..errors import ChuteError
from ..marks import FLUSH_AFTER
from ..results import ResultRecord
from ..states import State
from .job import Job, Reject, prepare
from .outage import OutageLog
from .settle import Dropped

if TYPE_CHECKING:
    from ..core import Core

log = logging.getLogger("chute.worker")


class Intake:
    """Claims messages into `held` (shared with the consumer and the heartbeat thread)."""

    def __init__(self, app: Core, queues: list[str], held: dict[str, Job | Delivery], outage: OutageLog,
                 closed: threading.Event, runs_inline: Callable[[Job], bool], cancellation_at_fetch: bool) -> None:
        self.app, self.broker, self.results, self.queues = app, app.broker, app.results, queues
        self._held, self._outage, self._closed = held, outage, closed
        self._runs_inline = runs_inline
        self._fetch_tells_cancelled = cancellation_at_fetch
        self._retry_in = 0.1  # seconds before the next fetch after a failed one

    def fetch(self, room: int, timeout: float) -> tuple[int, list[Job], list[Reject | Dropped]]:
        """(messages fetched, jobs to run, messages to settle without running them)."""
        try:
            if self.app.marks is not None:  # STARTED marks that waited long enough for outcomes to share
                self.app.marks.flush(older_than=FLUSH_AFTER)
            deliveries = self.broker.fetch(self.queues, room, self.app.lease, timeout)
        except ChuteError as exc:
            self._outage.error("fetch failed: %s; retrying in %.2g s", exc, self._retry_in)
            self._closed.wait(self._retry_in)  # back off: 0.1 s, doubling to 2 s, while the broker is down
            self._retry_in = min(self._retry_in * 2, 2.0)
            return 0, [], []
        if self._retry_in != 0.1:
            self._retry_in = 0.1
            self._outage.recovered()
        jobs: list[Job] = []
        unrun: list[Reject | Dropped] = []
        for delivery in deliveries:
            prepared = self._claim(delivery)
            if isinstance(prepared, Job):
                jobs.append(prepared)
            elif prepared is not None:
                unrun.append(prepared)
        return len(deliveries), self._start(jobs, unrun) if jobs else [], unrun

    def _claim(self, delivery: Delivery) -> Job | Reject | Dropped | None:
        """Decode and check one delivery: a Job (held), one to settle unrun, or None (released)."""
        try:
            prepared = prepare(self.app, delivery)
        except Exception as exc:  # e.g. the result store is down while checking an idempotency key
            log.error("could not prepare %s: %s; releasing it", delivery.id, exc)
            self.broker.release([delivery])
            return None
        if prepared is None:
            return Dropped(delivery)
        if isinstance(prepared, Job):
            self._held[delivery.id] = prepared
        return prepared

    def _start(self, jobs: list[Job], unrun: list[Reject | Dropped]) -> list[Job]:
        """Record the batch as started and learn which were cancelled, in one call to the store.

        A batch of proven-fast tasks that will all run inline is only checked for cancellations: it
        finishes within milliseconds, before a STARTED record could tell anyone anything, and the
        writes it would cost are a good part of a fast task's round trip to a remote store. Where
        the broker keeps the results and checked at fetch (`Delivery.cancelled`), that check is free.
        """
        now = time.time()
        try:
            if all(self._runs_inline(j) for j in jobs):
                cancelled = ({j.envelope.id for j in jobs if j.delivery.cancelled} if self._fetch_tells_cancelled
                             else self.results.cancelled([j.envelope.id for j in jobs]))
            else:
                cancelled = self.results.started([ResultRecord(j.envelope.id, State.STARTED, j.envelope.name,
                                                               j.envelope.queue, attempt=j.envelope.attempt,
                                                               updated_at=now) for j in jobs])
        except ChuteError as exc:  # cannot tell: hold them back rather than run a cancelled task
            self._outage.error("could not check cancellations: %s; releasing %d message(s)", exc, len(jobs))
            for j in jobs:
                self._held.pop(j.delivery.id, None)
            release(self.broker, self._outage, [j.delivery for j in jobs])
            return []
        if cancelled:
            for j in jobs:
                if j.envelope.id in cancelled:
                    self._held.pop(j.delivery.id, None)
                    unrun.append(Dropped(j.delivery, j))
            jobs = [j for j in jobs if j.envelope.id not in cancelled]
        for job in jobs:
            job.received = now
        return jobs


def release(broker: Queue, outage: OutageLog, deliveries: Sequence[Delivery]) -> None:
    """Give messages back for another worker at once (if this fails, their leases run out)."""
    try:
        broker.release(deliveries)
    except ChuteError as exc:
        outage.error("could not release %d message(s): %s; they return when their lease ends", len(deliveries), exc)
