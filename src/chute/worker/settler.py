"""Settler: decides each finished message (settle.py) and carries the batch out with as few round
trips as the orderings allow.

Each ordering is one a reader relies on:
- ack, fail, cancel: the record is stored before the ack, or with it in one transaction where the
  broker keeps the results (`acks_with_results`); a message is never gone without its outcome;
- success hooks (advancing a workflow): the record is stored, then the hooks run, then the ack; a
  hook's ChuteError leaves the message to run again, so what it sends is never lost;
- retry: the RETRYING record, then the message back with its next attempt, due later;
- dead letter: the move first, then the DEAD record, so whoever reads DEAD finds the message there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..brokers.base import Delivery
from ..envelope import Envelope
from ..errors import ChuteError
from ..events import EventBuffer
from ..results import ResultRecord
from ..states import State
from .job import Job, Outcome, Reject
from .outage import OutageLog
from .settle import Ack, Cancelled, DeadLetter, Dropped, Fail, Retry, Settlement, decide, succeeded
from .speed import Speeds

if TYPE_CHECKING:
    from ..core import Core

log = logging.getLogger("chute.worker")
outcomes = logging.getLogger("chute.task")  # one line per task outcome (INFO), apart from worker chatter
AckWithResults = Callable[[Sequence[Delivery], Sequence[ResultRecord]], int]
_KIND = {Ack: "succeeded", Retry: "retried", DeadLetter: "dead", Fail: "failed", Cancelled: "cancelled"}


class Settler:
    """Applies settlements; counts what it settled (`processed`, `failed`)."""

    def __init__(self, app: Core, events: EventBuffer | None, outage: OutageLog, acks_with_results: bool,
                 held: dict[str, Job | Delivery], speeds: Speeds) -> None:
        self.app, self.broker, self.results, self.hooks = app, app.broker, app.results, app.hooks
        self.events = events
        self._held, self._speeds = held, speeds
        self._outage = outage
        self._ack_with_results: AckWithResults | None = (  # the broker keeps the results: one transaction
            app.broker.ack if acks_with_results else None)
        self.processed = 0
        self.failed = 0

    def settle(self, items: Sequence[Outcome | Reject | Dropped]) -> None:
        """Decide each (settle.py), then carry the batch out."""
        now, codec, ttl, speeds = time.time(), self.app.codec, self.app.result_ttl, self._speeds
        batch: list[Settlement] = []
        held = self._held
        for item in items:
            if type(item) is Outcome:
                job = item.job
                if held.pop(job.delivery.id, None) is None:
                    continue  # already released (shutdown) or settled by the time-limit watchdog
                if item.error is None:  # the hot path: decide's own branch for a success, called directly
                    if not job.task.is_async:
                        speeds.record(job.envelope.name, item.duration, inline=not job.thread_id)
                    batch.append(succeeded(item, codec, ttl, now))
                    continue
            try:
                batch.append(decide(item, codec, ttl, now))
            except ChuteError as exc:  # a retry too large to send: it runs again once its lease ends
                self._outage.error("could not settle a failed task: %s; it will be redelivered", exc)
        self.apply(batch)

    def apply(self, batch: Sequence[Settlement]) -> None:
        acks: list[Settlement] = []
        hooked: list[Ack] = []
        later: list[Retry | DeadLetter] = []
        hooks = self.hooks
        wants, steps_only = (hooks.wants_success if hooks.has_success else None), hooks.success_for_steps_only
        succeeded_jobs = 0
        for s in batch:  # one pass, by exact type: it runs for every task
            kind = type(s)
            if kind is Ack:
                if s.job is not None:
                    if wants is not None and (not steps_only or s.job.envelope.workflow is not None) \
                            and wants(s.job):
                        hooked.append(s)  # type: ignore[arg-type]  # kind is Ack
                        continue
                    succeeded_jobs += 1
                acks.append(s)
            elif kind is Retry or kind is DeadLetter:
                later.append(s)  # type: ignore[arg-type]  # kind says which
                self.failed += 1
            else:
                acks.append(s)
                if kind is Fail or s.record is not None:  # a Cancelled with a record ran, and counts
                    self.failed += 1
        if acks:
            self._ack(acks, succeeded_jobs)
        if hooked:
            self._ack_after_hooks(hooked)
        for s in later:
            self._retry(s) if isinstance(s, Retry) else self._dead_letter(s)

    def _ack(self, batch: list[Settlement], succeeded_jobs: int) -> None:
        """Records and acks of one batch: one transaction where the broker keeps the results."""
        records = [s.record for s in batch if s.record is not None]
        deliveries = [s.delivery for s in batch]
        try:
            if self._ack_with_results is not None:
                self._ack_with_results(deliveries, records)
            else:
                if records:
                    self.results.store(records)
                self.broker.ack(deliveries)
        except ChuteError as exc:  # not acked: the lease runs out and the messages run again
            self._outage.error("could not record %d finished tasks: %s; they will be redelivered", len(batch), exc)
            return
        self.processed += succeeded_jobs
        self._report(batch)

    def _ack_after_hooks(self, batch: list[Ack]) -> None:
        try:
            self.results.store([s.record for s in batch if s.record is not None])
        except ChuteError as exc:
            self._outage.error("could not record %d finished tasks: %s; they will be redelivered", len(batch), exc)
            return
        done: list[Ack] = []
        for s in batch:
            assert s.job is not None
            try:
                self.hooks.after_success(s.job, s.value)
                done.append(s)
            except ChuteError as exc:
                env = s.job.envelope
                log.error("a success hook failed for task %s %s: %s; the task will run again", env.name, env.id, exc)
        if not done:
            return
        try:
            self.broker.ack([s.delivery for s in done])
        except ChuteError as exc:
            self._outage.error("could not acknowledge %d finished tasks: %s; they will be redelivered", len(done), exc)
            return
        self.processed += len(done)
        self._report(done)

    def _retry(self, s: Retry) -> None:
        assert s.job is not None and s.record is not None
        env = s.job.envelope
        try:
            self.results.store([s.record])
            self.broker.nack(s.delivery, s.body, time.time() + s.delay)
        except ChuteError as err:
            self._outage.error("could not settle failed task %s: %s; it will be redelivered", env.id, err)
            return
        self._report([s])

    def _dead_letter(self, s: DeadLetter) -> None:
        """Whoever reads DEAD finds the message in the dead-letter queue, ready to replay: a store that
        derives the state from the message gets the record (with its error) first, and shows DEAD only
        once the message moved; any other store gets the record once the message moved."""
        records = [] if s.record is None else [s.record]
        try:
            if self.app.pairing.store_sees_messages:
                self.results.store(records)
                self.broker.dead_letter(s.delivery, s.reason)
            else:
                self.broker.dead_letter(s.delivery, s.reason)
                self.results.store(records)
        except ChuteError as exc:
            self._outage.error("could not dead-letter %s: %s", s.delivery.id, exc)
            return
        self._report([s])

    def _report(self, batch: Sequence[Settlement]) -> None:
        """Events and log lines for settlements carried out (one buffer call for the rows)."""
        now = time.time()
        rows: list[tuple[Any, ...]] = []
        log_each = outcomes.isEnabledFor(logging.INFO)
        for s in batch:
            job, t = s.job, type(s)
            kind = _KIND[t]
            if job is None:  # never became a job: a reject, or a duplicate acknowledged unrun
                if t is not Ack:
                    self._rejected(s, kind, now, rows)
                continue
            env = job.envelope
            if t is Cancelled and s.record is None:
                log.info("task %s %s was cancelled; not running it", env.name, env.id)
                continue
            row = (now, kind, env.id, env.name, env.queue, env.attempt, s.duration, s.error, job.received)
            rows.append(row if env.workflow is None else (*row, env.workflow.id))
            if t is Ack:
                if log_each:
                    outcomes.info("task %s %s succeeded in %.1f ms", env.name, env.id, s.duration * 1000,
                                  extra=_fields(env, s.duration, "succeeded", ""))
            elif t is Retry:
                assert isinstance(s, Retry)
                outcomes.warning("task %s %s failed (attempt %d of %d), retrying in %.2f s: %s", env.name, env.id,
                                 env.attempt + 1, job.task.options.retries + 1, s.delay, s.error,
                                 extra=_fields(env, s.duration, "retrying", s.error))
            else:
                _final(s, env)
        if rows and self.events is not None:
            self.events.extend(rows)

    def _rejected(self, s: Settlement, kind: str, now: float, rows: list[tuple[Any, ...]]) -> None:
        d = s.delivery
        rows.append((now, kind, d.id, s.record.name if s.record is not None else "", d.queue, 0, 0.0, s.error, 0.0))
        log.error("message %s on %s %s: %s", d.id, d.queue, "dead-lettered" if kind == "dead" else "not run", s.error)


def _final(s: Settlement, env: Envelope) -> None:
    assert s.record is not None and s.record.error is not None
    state, info = s.record.state, s.record.error
    outcomes.error("task %s %s %s after %d attempt(s): %s: %s", env.name, env.id,
                   "dead-lettered" if state is State.DEAD else str(state), env.attempt + 1, info.type, info.message,
                   extra=_fields(env, s.duration, str(state), f"{info.type}: {info.message}"))


def _fields(env: Envelope, duration: float, state: str, error: str) -> dict[str, Any]:
    """The structured fields of a task outcome line (`--log-format json` prints them)."""
    return {"task_id": env.id, "task": env.name, "queue": env.queue, "attempt": env.attempt,
            "duration_ms": round(duration * 1000, 3), "state": state, "error": error}
