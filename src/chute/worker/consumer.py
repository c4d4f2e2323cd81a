"""Worker: fetches batches under a lease, runs them on threads (or an event loop), settles in batches.

Threads: the caller's thread runs the fetch/settle loop; `concurrency` executor threads run sync
tasks; one event-loop thread runs `async def` tasks; one heartbeat thread extends leases, writes
the worker's heartbeat and enforces time limits, so a busy task can never starve it.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from ..brokers.base import Delivery
from ..brokers.store import WorkerInfo
from ..envelope import Envelope, new_id
from ..errors import ChuteError, SerializationError, TaskCancelled, TimeLimitExceeded, WorkerLost
from ..events import EventBuffer
from ..marks import FLUSH_AFTER
from ..results import ResultRecord
from ..states import State
from .executor import AsyncRunner
from .job import (
    Job,
    Outcome,
    Reject,
    SuspectGate,
    error_info,
    prepare,
    result_record,
    retry_delay,
    run_entered,
    run_sync,
)
from .outage import OutageLog
from .speed import Speeds

if TYPE_CHECKING:
    from ..core import Core

log = logging.getLogger("chute.worker")
outcomes = logging.getLogger("chute.task")  # one line per task outcome (INFO), apart from worker chatter
EVENT_RETENTION = 3600.0
_STOP = object()
INLINE_BATCH_SECONDS, INLINE_BATCH_MAX = 0.005, 512  # a batch of proven-fast tasks: claimed together, run here
SETTLE_DELAY = 0.002  # seconds an outcome may wait to be settled with others in one transaction
TERMINATE_AFTER = 5.0  # seconds an interrupted task may take to stop before the worker gives up on it
CANCEL_CHECK_EVERY = 0.5  # seconds between checks for cancelled running tasks (only while some run)
INFO_EVERY = 2.0  # seconds between worker-info heartbeats (status freshness), apart from lease renewals


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
        self.terminate_after = TERMINATE_AFTER
        self.lease = app.lease
        self.heartbeat_every = heartbeat or max(0.2, self.lease / 3)
        self.id = new_id()  # unique per process start: recovery never keys on it
        self.processed = 0
        self.failed = 0
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
        self._ack_with_results: Callable[[Sequence[Delivery], Sequence[ResultRecord]], int] | None = (
            self.broker.ack if app.pairing.acks_with_results else None)
        self._fetch_tells_cancelled = app.pairing.cancellation_at_fetch
        self._low_water = max(1, self.prefetch // 4)
        self._settle_batch = max(1, self.prefetch // 2)
        supervisor = os.environ.get("CHUTE_SUPERVISOR_PID")
        self._supervisor_pid = int(supervisor) if supervisor and supervisor.isdigit() else None

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
        beat = threading.Thread(target=self._heartbeat_loop, name="chute-heartbeat", daemon=True)
        beat.start()
        self._beat_thread = beat
        self._beat()
        self.app.hooks.worker_started(self)
        log.info("worker %s consuming %s with %d threads, prefetch %d, lease %g s",
                 self.id, ",".join(self.queues), self.concurrency, self.prefetch, self.lease)

    def _fetch(self, room: int, timeout: float) -> int:
        try:
            if self.app.marks is not None:  # STARTED marks that waited long enough for outcomes to share
                self.app.marks.flush(older_than=FLUSH_AFTER)
            deliveries = self.broker.fetch(self.queues, room, self.lease, timeout)
        except ChuteError as exc:
            self._outage.error("fetch failed: %s; retrying in %.2g s", exc, self._retry_in)
            self._closed.wait(self._retry_in)  # back off: 0.1 s, doubling to 2 s, while the broker is down
            self._retry_in = min(self._retry_in * 2, 2.0)
            return 0
        if self._retry_in != 0.1:
            self._retry_in = 0.1
            self._outage.recovered()
        claimed = [job for job in map(self._claim, deliveries) if job is not None]
        if claimed:
            claimed = self._start_jobs(claimed)
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
                log.info("task %s %s was cancelled; not running it", j.envelope.name, j.envelope.id)
            self.broker.ack([j.delivery for j in dropped])
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

    def _claim(self, delivery: Delivery) -> Job | None:
        """Decode and check one delivery; settle it at once if it cannot run, else hold it."""
        try:
            prepared = prepare(self.app, delivery)
        except Exception as exc:  # e.g. the result store is down while checking an idempotency key
            log.error("could not prepare %s: %s; releasing it", delivery.id, exc)
            self.broker.release([delivery])
            return None
        if prepared is None:
            self.broker.ack([delivery])
            return None
        if isinstance(prepared, Reject):
            self._reject(prepared)
            return None
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

    def _settle(self, taken: list[Outcome]) -> None:
        acks: list[Delivery] = []
        records: list[ResultRecord] = []
        failures: list[Outcome] = []
        now = time.time()
        codec, app = self.app.codec, self.app
        log_each = outcomes.isEnabledFor(logging.INFO)
        events: list[tuple[Any, ...]] | None = [] if self.events is not None else None
        speeds = self._speeds
        for outcome in taken:
            job = outcome.job
            if self._held.pop(job.delivery.id, None) is None:
                continue  # already released (shutdown) or settled by the time-limit watchdog
            if outcome.error is not None:
                failures.append(outcome)
                continue
            env = job.envelope
            if not job.task.is_async:
                speeds.record(env.name, outcome.duration, inline=not job.thread_id)
            if env.workflow is not None:
                self._finish_step(job, outcome)
                continue
            if job.task.options.store_result:
                try:
                    value = None if outcome.value is None else codec.encode_value(outcome.value, f"{env.name} result")
                except SerializationError as exc:
                    self._fail_final(job, exc, "", State.FAILED, ack=True)
                    continue
                records.append(result_record(app, env, State.SUCCEEDED, value=value, now=now))
            acks.append(job.delivery)
            if events is not None:
                events.append((now, "succeeded", env.id, env.name, env.queue, env.attempt, outcome.duration, "",
                               job.received))
            if log_each:
                outcomes.info("task %s %s succeeded in %.1f ms", env.name, env.id, outcome.duration * 1000,
                              extra=_fields(env, outcome.duration, "succeeded", ""))
        if events:
            assert self.events is not None
            self.events.extend(events)
        if acks:
            try:
                if self._ack_with_results is not None:  # the broker keeps results: one transaction
                    self._ack_with_results(acks, records)
                else:
                    if records:
                        self.results.store(records)
                    self.broker.ack(acks)
                self.processed += len(acks)
            except ChuteError as exc:  # not acked: the lease runs out and the messages run again
                self._outage.error("could not record %d finished tasks: %s; they will be redelivered", len(acks), exc)
        for outcome in failures:
            self._settle_failure(outcome)

    def _finish_step(self, job: Job, outcome: Outcome) -> None:
        """A workflow step succeeded: record it, send what follows, then ack (a crash re-runs, never stalls)."""
        from ..workflows import advance

        env = job.envelope
        assert env.workflow is not None
        try:
            value = None if outcome.value is None else self.app.codec.encode_value(outcome.value, f"{env.name} result")
        except SerializationError as exc:
            self._fail_final(job, exc, "", State.FAILED, ack=True)
            return
        try:
            self.results.store([result_record(self.app, env, State.SUCCEEDED, value=value)])
            advance(self.app, env.workflow)
            self.broker.ack([job.delivery])
            self.processed += 1
        except ChuteError as exc:
            log.error("could not advance workflow %s after step %s: %s; the step will run again",
                      env.workflow.id, env.workflow.step, exc)
            return
        self._outcome_event("succeeded", job, outcome.duration, None)
        outcomes.info("task %s %s succeeded in %.1f ms", env.name, env.id, outcome.duration * 1000,
                      extra=_fields(env, outcome.duration, "succeeded", ""))

    def _settle_failure(self, outcome: Outcome) -> None:
        job, exc = outcome.job, outcome.error
        assert exc is not None
        env = job.envelope
        self.failed += 1
        try:
            if isinstance(exc, WorkerLost):
                self._fail_final(job, exc, "", State.DEAD, ack=False, reason=str(exc))
                return
            if isinstance(exc, TaskCancelled) or (job.cancelled and isinstance(exc, asyncio.CancelledError)):
                self._fail_final(job, TaskCancelled(f"{env.name} was cancelled while running"), outcome.traceback,
                                 State.CANCELLED, ack=True, duration=outcome.duration)
                return
            delay = retry_delay(job, exc)
            if delay is not None:
                retry = msgspec.structs.replace(env, attempt=env.attempt + 1)
                body = self.app.codec.encode(retry)
                self.results.store([result_record(self.app, env, State.RETRYING,
                                                  error=error_info(exc, outcome.traceback))])
                self.broker.nack(job.delivery, body, time.time() + delay)
                self._outcome_event("retried", job, outcome.duration, exc)
                outcomes.warning("task %s %s failed (attempt %d of %d), retrying in %.2f s: %s: %s", env.name, env.id,
                                 env.attempt + 1, job.task.options.retries + 1, delay, type(exc).__name__, exc,
                                 extra=_fields(env, outcome.duration, "retrying", f"{type(exc).__name__}: {exc}"))
                return
            state = State.DEAD if job.task.options.dead_letter else State.FAILED
            self._fail_final(job, exc, outcome.traceback, state, ack=state is State.FAILED, duration=outcome.duration)
        except ChuteError as err:
            self._outage.error("could not settle failed task %s: %s; it will be redelivered", env.id, err)

    def _outcome_event(self, kind: str, job: Job, duration: float, exc: BaseException | None) -> None:
        env = job.envelope
        error = "" if exc is None else f"{type(exc).__name__}: {exc}"
        if self.events is not None:
            self.events.emit(kind, env.id, env.name, env.queue, env.attempt, duration, error, job.received,
                             workflow=env.workflow.id if env.workflow is not None else "")

    def _fail_final(self, job: Job, exc: BaseException, tb: str, state: State, *, ack: bool,
                    reason: str | None = None, duration: float = 0.0) -> None:
        env = job.envelope
        info = error_info(exc, tb)
        self._outcome_event({State.DEAD: "dead", State.CANCELLED: "cancelled"}.get(state, "failed"), job, duration,
                            exc)
        record = result_record(self.app, env, state, error=info)
        if ack:  # the record first: a message acknowledged without its outcome would be gone without a trace
            self.results.store([record])
            self.broker.ack([job.delivery])
        else:
            self._dead_letter(job.delivery, reason or f"{info.type}: {info.message}", [record])
        outcomes.error("task %s %s %s after %d attempt(s): %s: %s", env.name, env.id,
                       "dead-lettered" if state is State.DEAD else str(state), env.attempt + 1, info.type, info.message,
                       extra=_fields(env, duration, str(state), f"{info.type}: {info.message}"))

    def _dead_letter(self, delivery: Delivery, reason: str, records: list[ResultRecord]) -> None:
        """Whoever reads DEAD finds the message in the dead-letter queue, ready to replay: a store that
        derives the state from the message gets the record (with its error) first, and shows DEAD only
        once the message moved; any other store gets the record once the message moved."""
        if self.app.pairing.store_sees_messages:
            self.results.store(records)
            self.broker.dead_letter(delivery, reason)
        else:
            self.broker.dead_letter(delivery, reason)
            self.results.store(records)

    def _reject(self, r: Reject) -> None:
        env = r.envelope
        try:
            records = [] if env is None else [
                result_record(self.app, env, r.state, error=r.error or error_info(ChuteError(r.reason), ""))]
            if self.events is not None:
                self.events.emit("dead" if r.state is State.DEAD else "failed", r.delivery.id,
                                 env.name if env else "", r.delivery.queue, error=r.reason)
            if r.state is State.DEAD:
                self._dead_letter(r.delivery, r.reason, records)
            else:
                self.results.store(records)
                self.broker.ack([r.delivery])
            self.failed += 1
            log.error("message %s on %s %s: %s", r.delivery.id, r.delivery.queue,
                      "dead-lettered" if r.state is State.DEAD else "not run", r.reason)
        except ChuteError as exc:
            self._outage.error("could not dead-letter %s: %s", r.delivery.id, exc)

    # -- heartbeat, leases, time limits --------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        next_beat = time.monotonic() + self.heartbeat_every
        next_info = time.monotonic() + INFO_EVERY
        next_cancel_check = time.monotonic() + CANCEL_CHECK_EVERY
        next_flush = time.monotonic() + 0.5
        next_purge = time.monotonic() + 60.0
        tick = min(0.1, self.heartbeat_every)
        while not self._closed.wait(tick):
            now = time.monotonic()
            if self._supervisor_pid is not None and os.getppid() != self._supervisor_pid and not self._stopping:
                log.error("supervisor %d is gone; stopping", self._supervisor_pid)
                self.stop()
            if now >= next_flush:
                self._flush_events()
                next_flush = now + 0.5
            if now >= next_cancel_check:
                self._notice_cancellations(now)
                next_cancel_check = now + CANCEL_CHECK_EVERY
            self._enforce_time_limits(now)
            if now >= next_beat:
                self._beat()
                next_beat = now + self.heartbeat_every
                next_info = now + INFO_EVERY
            elif now >= next_info:
                self._publish_info()
                next_info = now + INFO_EVERY
            if now >= next_purge:
                try:
                    self.results.purge_expired()
                except ChuteError as exc:
                    self._outage.error("could not purge expired results: %s", exc)
                next_purge = now + 60.0

    def _beat(self) -> None:
        held = list(self._held.copy().values())
        deliveries = [h.delivery if isinstance(h, Job) else h for h in held]
        try:
            if deliveries:
                kept = self.broker.extend(deliveries, self.lease)
                for d, ok in zip(deliveries, kept, strict=True):
                    if not ok:
                        log.warning("lost the lease on %s (%s); another worker may run it", d.id, d.queue)
        except ChuteError as exc:
            self._outage.error("could not extend leases: %s", exc)
        self._publish_info()

    def _flush_events(self) -> None:
        if self.events is None:
            return
        self._announce_waiting()
        batch = self.events.drain()
        if batch is not None:
            try:
                self.results.record_events(batch, EVENT_RETENTION)
            except ChuteError as exc:  # events are droppable; tasks are not
                self._outage.error("dropped a batch of events: %s", exc)

    def _announce_waiting(self) -> None:
        """`received`/`started` events for tasks still waiting or running at a flush (once each), so
        long tasks show up live while a fast one costs only its outcome event."""
        assert self.events is not None
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
            self.events.emit(kind, env.id, env.name, env.queue, env.attempt, 0.0, "", job.received, at,
                             env.workflow.id if env.workflow is not None else "")
            job.extra["announced"] = kind

    def _publish_info(self) -> None:
        if self.events is not None:
            self.events.emit("worker-heartbeat")
        try:
            if self.app.marks is not None:
                self.app.marks.flush()
            held, prefetched = self.broker.beat(self.id)
            self.results.heartbeat(msgspec.structs.replace(self.info(), in_flight=held, prefetched=prefetched),
                                   ttl=3 * max(self.heartbeat_every, INFO_EVERY) + 1)
        except ChuteError as exc:
            self._outage.error("heartbeat failed: %s", exc)

    def _notice_cancellations(self, now: float) -> None:
        running = [j for j in self._held.copy().values() if isinstance(j, Job) and j.started and not j.cancelled]
        if not running:
            return
        try:
            cancelled = self.results.cancelled([j.envelope.id for j in running])
        except ChuteError as exc:
            self._outage.error("could not check cancellations: %s", exc)
            return
        for job in running:
            if job.envelope.id in cancelled:
                job.cancelled, job.cancel_deadline = True, now + self.cancel_grace
                log.warning("task %s %s was cancelled while running; interrupting it in %g s unless it stops",
                            job.envelope.name, job.envelope.id, self.cancel_grace)

    def _enforce_time_limits(self, now: float) -> None:
        for item in list(self._held.copy().values()):
            if not isinstance(item, Job) or not item.started:
                continue
            if item.interrupted:
                if item.interrupted_at and now - item.interrupted_at > self.terminate_after:
                    self._terminate(item)
                continue
            if item.cancelled and now >= item.cancel_deadline:
                item.interrupted, item.interrupted_at = True, now
                self._interrupt(item, TaskCancelled)
                continue
            limit = item.task.options.time_limit
            if limit is not None and now - item.started > limit and not item.task.is_async:
                item.interrupted, item.interrupted_at = True, now
                log.warning("task %s %s exceeded its time limit of %g s; interrupting it",
                            item.envelope.name, item.envelope.id, limit)
                self._interrupt(item, TimeLimitExceeded)

    def _terminate(self, job: Job) -> None:
        """A task still running TERMINATE_AFTER seconds after it was interrupted is blocked outside
        Python (a C call, a socket without a timeout), where no exception reaches it. Settle it now as
        what it was interrupted for; then, in a supervised process, stop at once (the supervisor starts
        a fresh one: the stuck thread dies with this process), else replace the executor thread it holds."""
        job.interrupted_at = 0.0  # once
        env = job.envelope
        error: BaseException = (TaskCancelled(f"{env.name} was cancelled while running") if job.cancelled else
                                TimeLimitExceeded(f"{env.name} ran longer than its time limit of "
                                                  f"{job.task.options.time_limit:g} s"))
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

    def _interrupt(self, job: Job, error: type[BaseException]) -> None:
        """Raise `error` inside a running sync task's thread, or cancel an async task's coroutine."""
        future = job.extra.get("future")
        if future is not None:
            future.cancel()
        elif job.thread_id:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(job.thread_id), ctypes.py_object(error))

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
            self._flush_events()
        try:
            self.broker.stopped(self.id)
            self.results.worker_gone(self.id)
        except ChuteError:
            pass
        log.info("worker %s stopped: %d processed, %d failed", self.id, self.processed, self.failed)


def _fields(env: Envelope, duration: float, state: str, error: str) -> dict[str, Any]:
    """The structured fields of a task outcome line (`--log-format json` prints them)."""
    return {"task_id": env.id, "task": env.name, "queue": env.queue, "attempt": env.attempt,
            "duration_ms": round(duration * 1000, 3), "state": state, "error": error}
