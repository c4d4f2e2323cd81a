"""Ops: the operations API — read and act on an App's queues, workers, tasks, dead letters,
workflows and schedules, as plain data (chute.ops.views).

The dashboard's pages and JSON API, `chute status` and `chute dlq` all call this class and nothing
else, so they show the same numbers. It imports no web framework. Everything it returns is redacted
(chute.redact); broker URLs lose their passwords.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..brokers import redact_url
from ..errors import ChuteError, ConfigurationError
from ..events import OUTCOMES, Event
from ..redact import Redactor
from ..results import ResultRecord
from ..states import State
from .dead import DeadLetterOps
from .history import RATE_KINDS, STATE_OF, History
from .views import (
    ActionResult,
    Attempt,
    ErrorView,
    Health,
    Overview,
    QueueView,
    RatePoint,
    SchedulerView,
    Schedules,
    ScheduleView,
    Status,
    StepView,
    TaskSummary,
    TaskView,
    WorkerView,
    WorkflowSummary,
    WorkflowView,
)

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("chute.ops")
STATES = tuple(s.value for s in State if s is not State.UNKNOWN)
ARGS_GONE = "not kept: a task's arguments live in its message, which is gone once it ran (dead letters keep theirs)"


class Ops(DeadLetterOps):
    """The operations API on one App. Thread-safe; `history` folds the event stream once per process."""

    def __init__(self, app: App, *, redactor: Redactor | None = None, history: History | None = None) -> None:
        self.app = app
        self.redactor = redactor or Redactor.from_env()
        self.history = history or History(app.results)

    # -- overview and workers ------------------------------------------------------------------
    def queues(self) -> list[QueueView]:
        stats = {s.queue: s for s in self.app.broker.stats()}
        known = {t.options.queue for t in self.app.tasks.values()} - stats.keys()
        views = [QueueView(s.queue, s.ready, s.in_flight, s.delayed, s.dead) for s in stats.values()]
        views += [QueueView(q, 0, 0, 0, 0) for q in known]
        return sorted(views, key=lambda q: q.queue)

    def overview(self) -> Overview:
        now = time.time()
        queues = self.queues()
        alive = self.app.results.workers()
        self.history.refresh()
        rates = [RatePoint(minute, *counts) for minute, counts in self.history.rates(now)]
        ok = sum(r.succeeded for r in rates)
        bad = sum(r.failed + r.dead for r in rates)
        return Overview(redact_url(self.app.url), now, queues, len(alive), sum(len(w.running) for w in alive), rates,
                        ok, bad, sum(r.retried for r in rates), round(bad / (ok + bad), 4) if ok + bad else 0.0)

    def workers(self, include_offline: bool = True) -> list[WorkerView]:
        """Live workers, then (optionally) those that went offline within the last hour."""
        now = time.time()
        views = [WorkerView(w.id, w.state, w.hostname, w.pid, list(w.queues), w.concurrency, w.started_at,
                            w.heartbeat_at, round(max(0.0, now - w.heartbeat_at), 1), w.processed, w.failed,
                            list(w.running)) for w in self.app.results.workers()]
        if include_offline:
            self.history.refresh()
            alive = {v.id for v in views}
            gone = [e for e in self.history.workers.values() if e.kind == "worker-offline" and e.worker not in alive]
            views += [WorkerView(e.worker, "offline", heartbeat_at=e.at, heartbeat_age=round(now - e.at, 1))
                      for e in sorted(gone, key=lambda e: -e.at)]
        return views

    def status(self) -> Status:
        """What `chute status` prints."""
        overview = self.overview()
        return Status(overview.broker, overview.queues, self.workers(include_offline=False), overview)

    def health(self, max_heartbeat_age: float = 30.0) -> Health:
        """Healthy when the broker answers and some worker sent a heartbeat within the limit."""
        reasons: list[str] = []
        try:
            alive = self.app.results.workers()
            self.app.broker.stats()
        except Exception as exc:  # whatever the broker raised, it did not answer: unhealthy, never a crash
            log.warning("health check: the broker did not answer: %s", self.redactor.text(str(exc)))
            return Health(False, False, 0, None, max_heartbeat_age, ["broker unreachable"])
        newest = max((w.heartbeat_at for w in alive), default=None)
        age = None if newest is None else round(max(0.0, time.time() - newest), 1)
        if age is None:
            reasons.append("no worker is alive")
        elif age > max_heartbeat_age:
            reasons.append(f"no worker heartbeat within {max_heartbeat_age:g} s")
        return Health(not reasons, True, len(alive), age, max_heartbeat_age, reasons)

    # -- tasks ---------------------------------------------------------------------------------
    def task(self, task_id: str) -> TaskView | None:
        """Everything known about one task, or None if chute knows nothing of it."""
        record = self.app.results.get(task_id)
        self.history.refresh()
        events = self.history.timeline(task_id)
        dead = self._find_dead(task_id)
        if record is None and not events and dead is None:
            return None
        last = events[-1] if events else None
        view = TaskView(task_id, record.state.value if record else (STATE_OF.get(last.kind, "unknown") if last
                                                                    else State.DEAD.value))
        view.name = (record.name if record else "") or (last.name if last else "")
        view.queue = (record.queue if record else "") or (last.queue if last else "") or (dead.queue if dead else "")
        view.attempt = record.attempt if record else (last.attempt if last else 0)
        view.updated_at = record.updated_at if record else (last.at if last else 0.0)
        view.timeline = attempts(events)
        for a in view.timeline:
            a.error = self.redactor.text(a.error)
        view.workflow = next((e.workflow for e in events if e.workflow), "")
        if dead is not None:
            described = self._describe(dead)
            view.args, view.kwargs, view.dead_letter = described.args, described.kwargs, True
            view.name = view.name or described.task
        else:
            view.args_note = ARGS_GONE
        if record is not None:
            self._outcome(record, view)
        return view

    def _outcome(self, record: ResultRecord, view: TaskView) -> None:
        if record.state is State.SUCCEEDED and record.value is not None:
            try:
                view.result = self.redactor.value(self.app.codec.decode_value(record.value, record.codec))
            except (ChuteError, ValueError) as exc:
                view.result = f"<result not decodable: {exc}>"
        if record.error is not None:
            red = self.redactor.text
            view.error = ErrorView(record.error.type, red(record.error.message), red(record.error.traceback))

    def tasks(self, state: str | None = None, name: str | None = None, limit: int = 100) -> list[TaskSummary]:
        """Recent tasks, newest first: by state from the last hour's events, running ones from the
        workers, dead ones from the dead-letter queue. Queued tasks are counted, not listed."""
        if state is not None and state not in STATES:
            raise ConfigurationError(f"unknown state {state!r}; one of {', '.join(STATES)}")
        self.history.refresh()
        if state == State.DEAD.value:
            found = [TaskSummary(d.id, "dead", d.task, d.queue, d.attempt, d.dead_at, d.reason)
                     for d in self.dead_letters(task=name, limit=limit)]
            return sorted(found, key=lambda t: -t.at)
        out = [self._summary(e) for e in self.history.recent(state, name, limit)]
        if state == State.STARTED.value:
            seen = {t.id for t in out}
            for w in self.app.results.workers():
                for task_id in w.running:
                    if task_id not in seen and len(out) < limit:
                        seen.add(task_id)
                        out.append(TaskSummary(task_id, "started", at=w.heartbeat_at))
        return out

    def _summary(self, e: Event) -> TaskSummary:
        return TaskSummary(e.task_id, STATE_OF.get(e.kind, e.kind), e.name, e.queue, e.attempt, e.at,
                           self.redactor.text(e.error))

    def cancel(self, task_id: str) -> ActionResult:
        return ActionResult("cancel", 1 if self.app.cancel(task_id) else 0)

    # -- dead letters --------------------------------------------------------------------------
    # -- workflows and schedules ---------------------------------------------------------------
    def workflow(self, workflow_id: str) -> WorkflowView | None:
        from ..workflows import overall_state

        try:
            d = self.app.workflow(workflow_id).definition()
        except KeyError:
            return None
        states = [self.app.result(s.task_id).status if s.task_id else State.QUEUED for s in d.steps]
        steps = [StepView(s.name, s.call.task, s.task_id, st.value, list(s.after))
                 for s, st in zip(d.steps, states, strict=True)]
        return WorkflowView(d.id, d.kind, overall_state(d.cancelled, states).value, d.created, d.cancelled, steps)

    def workflows(self, limit: int = 50) -> list[WorkflowSummary]:
        """Workflows with a step that ran in the last hour, most recently active first."""
        self.history.refresh()
        out: list[WorkflowSummary] = []
        for wid, seen in self.history.recent_workflows(limit):
            w = self.workflow(wid)
            if w is not None:
                out.append(WorkflowSummary(w.id, w.kind, w.state, w.created, len(w.steps), seen))
        return out

    def schedules(self) -> Schedules:
        from ..scheduler import Scheduler

        now = time.time()
        views: list[ScheduleView] = []
        for name, p in sorted(self.app.schedules.items()):
            raw = self.app.results.get_meta(f"chute.periodic:{name}:last")
            last = float(raw) if raw else None
            views.append(ScheduleView(name, p.every, p.cron, p.tz.key, p.missed, p.next_slot(max(now, last or 0.0)),
                                      last))
        return Schedules(views, _scheduler(self.app.results.get_meta(Scheduler.ACTIVE), now))


def attempts(events: Sequence[Event]) -> list[Attempt]:
    """A task's attempts from its events, in order; one still running ends the list unfinished."""
    out: list[Attempt] = []
    open_: dict[int, Attempt] = {}
    for e in events:
        current = open_.get(e.attempt)
        if current is None:
            current = Attempt(e.attempt, e.kind, e.worker, received=e.received)
            out.append(current)
        if e.kind in OUTCOMES:
            current.outcome, current.worker, current.finished, current.duration = e.kind, e.worker, e.at, e.duration
            current.started, current.error = (e.at - e.duration) if e.received else 0.0, e.error
            current.received = e.received or current.received
            open_.pop(e.attempt, None)
        else:
            current.outcome, current.worker = e.kind, e.worker
            current.started = e.at if e.kind == "started" else current.started
            open_[e.attempt] = current
    return out


def _scheduler(raw: str | None, now: float) -> SchedulerView | None:
    if not raw:
        return None
    try:
        d: dict[str, Any] = json.loads(raw)
        return SchedulerView(str(d["id"]), str(d["hostname"]), int(d["pid"]), float(d["since"]),
                             float(d["renewed_at"]), float(d["lease"]),
                             now - float(d["renewed_at"]) <= float(d["lease"]))
    except (ValueError, KeyError, TypeError):
        return None


__all__ = ["Ops", "STATES", "RATE_KINDS", "attempts"]
