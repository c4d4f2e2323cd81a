"""Worker: fetches batches under a lease, runs them on threads (or an event loop), settles in batches.

Threads: the caller's thread runs this loop: take work (intake.py), hand it out (executor.py),
decide each outcome (settle.py) and carry the batch out (settler.py); `concurrency` executor threads
run sync tasks; one event-loop thread runs `async def` tasks; one heartbeat thread (upkeep.py,
limits.py) extends leases, writes the worker's heartbeat and enforces time limits, so a busy task
can never starve it.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..brokers.base import Delivery
from ..brokers.store import WorkerInfo
from ..envelope import new_id
from ..errors import ChuteError
from ..events import EventBuffer
from .advance import Advance
from .executor import Executors
from .intake import Intake, release
from .job import Job, Outcome, SuspectGate
from .limits import Limits
from .outage import OutageLog
from .settler import Settler
from .speed import Speeds
from .upkeep import Upkeep

if TYPE_CHECKING:
    from ..core import Core

log = logging.getLogger("chute.worker")
SETTLE_DELAY = 0.002  # seconds an outcome may wait to be settled with others in one transaction


class Worker:
    """Consumes `queues` of an App until stopped."""

    def __init__(self, app: Core, queues: Sequence[str] | None = None, *, concurrency: int = 8,
                 prefetch: int | None = None, grace: float = 30.0, heartbeat: float | None = None,
                 cancel_grace: float = 5.0, events: bool = True) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.app = app
        self.broker = app.broker
        self.results = app.results
        self.queues = list(queues) if queues else sorted({t.options.queue for t in app.tasks.values()}
                                                         or {app.default_queue})
        self.concurrency = concurrency
        self.prefetch = prefetch or max(4 * concurrency, 16)
        if self.prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self.grace = grace
        self.cancel_grace = cancel_grace
        self.lease = app.lease
        self.heartbeat_every = heartbeat or max(0.2, self.lease / 3)
        self.id = new_id()  # unique per process start: recovery never keys on it
        self.started_at = time.time()
        self._held: dict[str, Job | Delivery] = {}
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._stopping = False
        self._hard_stop = False
        self._stop_deadline = 0.0
        self._gate = SuspectGate()
        self._speeds = Speeds()  # how long each task takes here: which run inline
        self._outage = OutageLog(log)  # broker errors: at most a line a second while it is down
        self.events = EventBuffer(self.id) if events else None
        self._executors = Executors(app, concurrency, self.prefetch, self._gate, self._speeds, self._complete)
        paired = app.pairing
        self._intake = Intake(app, self.queues, self._held, self._outage, self._closed, self._executors.runs_inline,
                              paired.cancellation_at_fetch)
        app.hooks.ensure(Advance(app))  # a workflow's next steps are sent by a success hook
        self._settler = Settler(app, self.events, self._outage, paired.acks_with_results, self._held, self._speeds)
        self._limits = Limits(self.results, self._outage, cancel_grace, self._give_up)
        self._low_water = max(1, self.prefetch // 4)
        self._settle_batch = max(1, self.prefetch // 2)
        supervisor = os.environ.get("CHUTE_SUPERVISOR_PID")
        self._supervisor_pid = int(supervisor) if supervisor and supervisor.isdigit() else None

    @property
    def processed(self) -> int:
        return self._settler.processed

    @property
    def failed(self) -> int:
        return self._settler.failed

    @property
    def terminate_after(self) -> float:
        """Seconds an interrupted task may take to stop before the worker gives up on it."""
        return self._limits.terminate_after

    @terminate_after.setter
    def terminate_after(self, seconds: float) -> None:
        self._limits.terminate_after = seconds

    # -- control -------------------------------------------------------------------------------
    def stop(self, graceful: bool = True) -> None:
        """Begin shutdown: finish running tasks within the grace period, release the rest.

        Safe to call from a signal handler; a second call (or graceful=False) stops at once.
        """
        if self._stopping or not graceful:
            self._hard_stop = True
        if not self._stopping:
            self._stopping = True
            self._stop_deadline = time.monotonic() + self.grace

    def install_signal_handlers(self) -> None:
        def handle(signum: int, frame: object) -> None:
            log.warning("received %s: %s", signal.Signals(signum).name,
                        "stopping now" if self._stopping else f"finishing running tasks (grace {self.grace:g} s)")
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    # -- main loop -----------------------------------------------------------------------------
    def run(self, until_idle: bool = False) -> None:
        """Run until stopped (or, with `until_idle`, until no work is left: for tests)."""
        self._start()
        poll = 0.0005
        first_done = 0.0  # when the oldest outcome not yet settled was seen
        try:
            while True:
                if not self._done.empty():
                    now = time.monotonic()
                    first_done = first_done or now
                    if self._stopping or self._settle_due(now - first_done):
                        self._settle_done()
                        first_done = 0.0
                if self._stopping:
                    if self._shutdown_step():
                        break
                    continue
                # finished-but-unsettled jobs occupy no executor: refill for them before settling
                room = self.prefetch - len(self._held) + self._done.qsize()
                if self._executors.inline_room and not self._held:  # the last batch all ran here: take more
                    room = max(room, self._executors.inline_room)
                fetched = 0
                if room >= self._low_water or not self._held:
                    timeout = 0.0 if (self._held or until_idle) else 0.5
                    fetched = self._fetch(room, timeout)
                    if not fetched and not self._held and until_idle:
                        break
                if fetched:
                    poll = 0.0005
                    continue
                wait = poll if room >= self._low_water else 0.25
                if first_done:
                    wait = min(wait, max(0.0, SETTLE_DELAY - (time.monotonic() - first_done)))
                if self._wake.wait(wait):
                    self._wake.clear()
                poll = min(poll * 2, 0.025)
        finally:
            self._finish()

    def _settle_due(self, age: float) -> bool:
        """Settle now, or let outcomes gather into a bigger batch (one transaction for many)?

        Now when a batch's worth is waiting, when every held job has finished (a lone task is
        never kept waiting), or when the oldest outcome is SETTLE_DELAY old.
        """
        waiting = self._done.qsize()
        return (waiting >= self._settle_batch or waiting >= len(self._held) or age >= SETTLE_DELAY
                or self._gate.exclusive)  # a suspect is running or waits for settled outcomes to leave

    def _start(self) -> None:
        if self.events is not None:
            self.events.emit("worker-online")
        self._closed.clear()
        self._executors.start()
        self.app.declare_subscribers()
        self._upkeep = Upkeep(self.app, self._held, self.events, self._outage, self._limits, self.info,
                              every=self.heartbeat_every, supervisor=self._supervisor_pid, orphaned=self._orphaned)
        beat = threading.Thread(target=self._upkeep.run, args=(self._closed,), name="chute-heartbeat", daemon=True)
        beat.start()
        self._beat_thread = beat
        self._upkeep.beat()
        self.app.hooks.worker_started(self)
        log.info("worker %s consuming %s with %d threads, prefetch %d, lease %g s",
                 self.id, ",".join(self.queues), self.concurrency, self.prefetch, self.lease)

    def _fetch(self, room: int, timeout: float) -> int:
        fetched, jobs, unrun = self._intake.fetch(room, timeout)
        if unrun:
            self._settler.settle(unrun)
        for outcome in self._executors.dispatch(jobs):  # the inline ones ran already
            self._done.put(outcome)
        return fetched

    def _complete(self, outcome: Outcome) -> None:
        done = self._done
        done.put(outcome)
        # Wake the consumer only when it has something worth doing: refill a running-low work
        # queue, settle a full batch, or let a suspect go on. Otherwise it wakes within SETTLE_DELAY.
        if (self._executors.work.qsize() <= self._low_water or done.qsize() >= self._settle_batch
                or self._gate.exclusive):
            self._wake.set()

    # -- settling ------------------------------------------------------------------------------
    def _settle_done(self) -> None:
        done, taken = self._done, []
        while not done.empty():
            taken.append(done.get_nowait())  # only this thread takes from it
        if not taken:
            return
        try:
            self._settler.settle(taken)
        finally:
            gate = self._gate
            for outcome in taken:  # settled: now a suspect may start (see SuspectGate)
                gate.leave(id(outcome.job), outcome.job.suspect)

    # -- heartbeat-thread callbacks ------------------------------------------------------------
    def _give_up(self, job: Job, error: BaseException) -> None:
        """A task blocked outside Python (a C call, a socket without a timeout) ignored its interrupt:
        settle it now as what it was interrupted for; then, in a supervised process, stop at once (the
        supervisor starts a fresh one: the stuck thread dies with this process), else replace its thread."""
        env = job.envelope
        log.error("task %s %s did not stop within %g s of being interrupted (blocked outside Python?); "
                  "settling it as %s and %s", env.name, env.id, self.terminate_after, type(error).__name__,
                  "restarting this worker process" if self._supervisor_pid else "replacing its thread")
        self._complete(Outcome(job, None, error, "", time.monotonic() - job.started))
        if self._supervisor_pid is not None:
            self.stop(graceful=False)  # what else it holds is released to other workers at once
        elif not job.task.is_async:
            self._executors.add_thread()

    def _orphaned(self) -> None:
        if not self._stopping:
            log.error("supervisor %d is gone; stopping", self._supervisor_pid)
            self.stop()

    def info(self) -> WorkerInfo:
        running = [h.envelope.id for h in self._held.copy().values() if isinstance(h, Job) and h.started]
        return WorkerInfo(self.id, socket.gethostname(), os.getpid(), self.queues, self.concurrency,
                          self.started_at, time.time(), self.processed, self.failed, running,
                          "stopping" if self._stopping else "online")

    # -- shutdown ------------------------------------------------------------------------------
    def _shutdown_step(self) -> bool:
        """One turn of the shutdown loop; True when the worker may exit."""
        waiting = [j.delivery for j in self._executors.waiting()  # prefetched, not started: give back now
                   if self._held.pop(j.delivery.id, None) is not None]
        if waiting:
            release(self.broker, self._outage, waiting)
        if not self._held:
            return True
        if self._hard_stop or time.monotonic() >= self._stop_deadline:
            log.warning("grace period over: releasing %d running task(s) to other workers", len(self._held))
            self._release_held()
            return True
        if self._wake.wait(0.05):
            self._wake.clear()
        return False

    def _release_held(self) -> None:
        left = [h.delivery if isinstance(h, Job) else h for h in self._held.values()]
        self._held.clear()
        if left:
            release(self.broker, self._outage, left)

    def _finish(self) -> None:
        self._stopping = True
        self.app.hooks.worker_stopping(self)
        self._release_held()
        self._executors.close()
        self._closed.set()
        self._beat_thread.join(timeout=5)  # its last flush or heartbeat lands before ours
        if self.events is not None:
            self.events.emit("worker-offline")
            self._upkeep.flush_events()
        try:
            self.broker.stopped(self.id)
            self.results.worker_gone(self.id)
        except ChuteError:
            pass
        log.info("worker %s stopped: %d processed, %d failed", self.id, self.processed, self.failed)
