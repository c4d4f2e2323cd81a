"""Worker: fetches batches under a lease, runs them on threads (or an event loop), settles in batches.

Threads: the caller's thread runs the fetch/settle loop; `concurrency` executor threads run sync
tasks; one event-loop thread runs `async def` tasks; one heartbeat thread extends leases, writes
the worker's heartbeat and enforces time limits, so a busy task can never starve it.
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
from typing import TYPE_CHECKING, Any, NamedTuple

from ..brokers.base import Delivery, WorkerInfo
from ..envelope import new_id
from ..errors import ChuteError
from ..events import EventBuffer
from ..results import ResultRecord
from ..states import State
from .advance import Advance
from .executor import AsyncRunner
from .job import Job, Outcome, Reject, SuspectGate, prepare
from .limits import Limits
from .outage import OutageLog
from .run import run_entered, run_sync
from .settle import Dropped, Settlement, decide
from .settler import AckWithResults, Settler
from .speed import Speeds
from .upkeep import Upkeep

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("chute.worker")
_STOP = object()
INLINE_BATCH_SECONDS, INLINE_BATCH_MAX = 0.005, 512  # a batch of proven-fast tasks: claimed together, run here
SETTLE_DELAY = 0.002  # seconds an outcome may wait to be settled with others in one transaction


class Worker:
    """Consumes `queues` of an App until stopped."""

    def __init__(self, app: App, queues: Sequence[str] | None = None, *, concurrency: int = 8,
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
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._stopping = False
        self._hard_stop = False
        self._stop_deadline = 0.0
        self._threads: list[threading.Thread] = []
        self._async: AsyncRunner | None = None
        self._gate = SuspectGate()
        self._speeds = Speeds()  # how long each task takes here: which run inline
        self._outage = OutageLog(log)  # broker errors: at most a line a second while it is down
        self._retry_in = 0.1  # seconds before the next fetch after a failed one
        self._inline_room = 0  # after a batch that ran entirely inline: how many to claim next time
        self.events = EventBuffer(self.id) if events else None
        pairing = _pairing(app)
        self._fetch_tells_cancelled = pairing.cancellation_at_fetch
        ack_with: AckWithResults | None = self.broker.ack if pairing.acks_with_results else None  # type: ignore[assignment]
        app.hooks.ensure(Advance())  # a workflow's next steps are sent by a success hook
        self._settler = Settler(app, self.events, self._outage, ack_with)
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
                if self._inline_room and not self._held:  # the last batch all ran here, fast: take a bigger one
                    room = max(room, self._inline_room)
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
        for i in range(self.concurrency):
            t = threading.Thread(target=self._executor_loop, name=f"chute-exec-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        if any(t.is_async for t in self.app.tasks.values()):
            self._async = AsyncRunner(self._complete, self._gate)
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
        try:
            deliveries = self.broker.fetch(self.queues, room, self.lease, timeout)
        except ChuteError as exc:
            self._outage.error("fetch failed: %s; retrying in %.2g s", exc, self._retry_in)
            self._closed.wait(self._retry_in)  # back off: 0.1 s, doubling to 2 s, while the broker is down
            self._retry_in = min(self._retry_in * 2, 2.0)
            return 0
        if self._retry_in != 0.1:
            self._retry_in = 0.1
            self._outage.recovered()
        claimed: list[Job] = []
        refused: list[Reject | Dropped] = []
        for delivery in deliveries:
            prepared = self._claim(delivery)
            if isinstance(prepared, Job):
                claimed.append(prepared)
            elif prepared is not None:
                refused.append(prepared)
        if refused:
            self._settle(refused)
        if claimed:
            self._start_jobs(claimed)
        return len(deliveries)

    def _start_jobs(self, jobs: list[Job]) -> list[Job]:
        """Record the batch as started and learn which were cancelled, in one call to the store,
        before any can finish; then hand the rest to the executors.

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
            self._release([j.delivery for j in jobs])
            return []
        if cancelled:
            dropped = [j for j in jobs if j.envelope.id in cancelled]
            for j in dropped:
                self._held.pop(j.delivery.id, None)
            self._settle([Dropped(j.delivery, j) for j in dropped])
            jobs = [j for j in jobs if j.envelope.id not in cancelled]
        inline: list[Job] = []
        for job in jobs:
            job.received = now
            if job.task.is_async:
                assert self._async is not None
                job.extra["future"] = self._async.submit(job, self.app)
            elif self._runs_inline(job):
                inline.append(job)
            else:
                self._work.put(job)
        gate = self._gate
        for job in inline:  # proven-fast tasks: cheaper to run here than to hand to a thread
            if gate.try_enter(id(job)):
                self._done.put(run_entered(job, self.app, gate))
            else:  # a suspect holds the gate and waits for us to settle: never wait for it here
                self._work.put(job)
        self._inline_room = self._inline_batch(inline) if inline and len(inline) == len(jobs) else 0
        return jobs

    def _inline_batch(self, ran: list[Job]) -> int:
        """How many messages to claim next when a whole batch ran inline: as many as run in a few
        milliseconds, so a bigger batch costs no fairness (they are done before anyone could want them)."""
        slowest = max(self._speeds.estimate(j.task.name) for j in ran)
        return max(self.prefetch, min(INLINE_BATCH_MAX, int(INLINE_BATCH_SECONDS / max(slowest, 1e-6))))

    def _runs_inline(self, job: Job) -> bool:
        """True for a sync task that has proven fast here (and has no limit that needs a thread)."""
        opts = job.task.options
        if opts.time_limit is not None or opts.rate_limit is not None or job.suspect:
            return False
        return self._speeds.runs_inline(job.task.name)

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

    def _executor_loop(self) -> None:
        work, app, gate = self._work, self.app, self._gate
        while True:
            job = work.get()
            if job is _STOP:
                return
            job.thread_id = threading.get_ident()
            self._complete(run_sync(job, app, gate))

    def _complete(self, outcome: Outcome) -> None:
        done = self._done
        done.put(outcome)
        # Wake the consumer only when it has something worth doing: refill a running-low work
        # queue, settle a full batch, or let a suspect go on. Otherwise it wakes within SETTLE_DELAY.
        if self._work.qsize() <= self._low_water or done.qsize() >= self._settle_batch or self._gate.exclusive:
            self._wake.set()

    # -- settling ------------------------------------------------------------------------------
    def _settle_done(self) -> None:
        done, taken = self._done, []
        while not done.empty():
            taken.append(done.get_nowait())  # only this thread takes from it
        if not taken:
            return
        try:
            self._settle(taken)
        finally:
            gate = self._gate
            for outcome in taken:  # settled: now a suspect may start (see SuspectGate)
                gate.leave(id(outcome.job), outcome.job.suspect)

    def _settle(self, items: Sequence[Outcome | Reject | Dropped]) -> None:
        """Decide each (settle.py), then carry the batch out (settler.py)."""
        now, codec, ttl, speeds = time.time(), self.app.codec, self.app.result_ttl, self._speeds
        batch: list[Settlement] = []
        for item in items:
            if isinstance(item, Outcome):
                job = item.job
                if self._held.pop(job.delivery.id, None) is None:
                    continue  # already released (shutdown) or settled by the time-limit watchdog
                if item.error is None and not job.task.is_async:
                    speeds.record(job.envelope.name, item.duration, inline=not job.thread_id)
            try:
                batch.append(decide(item, codec, ttl, now))
            except ChuteError as exc:  # a retry too large to send: it runs again once its lease ends
                self._outage.error("could not settle %s: %s; it will be redelivered", item.delivery.id
                                   if not isinstance(item, Outcome) else item.job.delivery.id, exc)
        self._settler.apply(batch)

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
            t = threading.Thread(target=self._executor_loop, name=f"chute-exec-r{len(self._threads)}", daemon=True)
            t.start()
            self._threads.append(t)

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
        waiting: list[Delivery] = []
        while True:  # prefetched but not started: give back at once
            try:
                job = self._work.get_nowait()
            except queue.Empty:
                break
            if self._held.pop(job.delivery.id, None) is not None:
                waiting.append(job.delivery)
        if waiting:
            self._release(waiting)
        if not self._held:
            return True
        if self._hard_stop or time.monotonic() >= self._stop_deadline:
            left = [h.delivery if isinstance(h, Job) else h for h in self._held.values()]
            self._held.clear()
            log.warning("grace period over: releasing %d running task(s) to other workers", len(left))
            self._release(left)
            return True
        if self._wake.wait(0.05):
            self._wake.clear()
        return False

    def _release(self, deliveries: list[Delivery]) -> None:
        try:
            self.broker.release(deliveries)
        except ChuteError as exc:
            self._outage.error("could not release %d message(s): %s; they return when their lease ends",
                               len(deliveries), exc)

    def _finish(self) -> None:
        self._stopping = True
        self.app.hooks.worker_stopping(self)
        left = [h.delivery if isinstance(h, Job) else h for h in self._held.values()]
        self._held.clear()
        if left:
            self._release(left)
        for _ in self._threads:
            self._work.put(_STOP)
        self._threads.clear()
        if self._async is not None:
            self._async.close()
        self._closed.set()
        self._beat_thread.join(timeout=5)  # its last flush or heartbeat lands before ours
        if self.events is not None:
            self.events.emit("worker-offline")
            self._upkeep.flush_events()
        try:
            self.broker.worker_gone(self.id)
        except ChuteError:
            pass
        log.info("worker %s stopped: %d processed, %d failed", self.id, self.processed, self.failed)


class _Pairing(NamedTuple):
    acks_with_results: bool  # ack(deliveries, records) writes both in one transaction
    cancellation_at_fetch: bool  # each Delivery says whether its task was cancelled


def _pairing(app: App) -> _Pairing:
    """What the broker does natively as the App's result store too: the one place that asks the
    broker by attribute name (the App is to declare it as `app.pairing`)."""
    store: object = app.results
    paired = store is app.broker
    return _Pairing(paired and bool(getattr(app.broker, "acks_with_results", False)),
                    paired and bool(getattr(app.broker, "checks_cancellation_at_fetch", False)))
