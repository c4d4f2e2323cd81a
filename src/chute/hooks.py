"""Middleware: the one small set of named hooks through which optional behaviour joins chute.

Subclass Middleware, override the hooks you need, and `app.hooks.add(instance)`. Hooks run in
the order added; `task_finished` runs in reverse order, so a hook pair nests like a context.
Advancing a workflow is one of them (`worker/advance.py`, a success hook): the settling code never names it.
"""

from __future__ import annotations

from typing import Any, Protocol

from .envelope import Envelope


class JobView(Protocol):
    """What a hook sees of a running task (chute.worker.job.Job)."""

    @property
    def envelope(self) -> Envelope:
        """The message as sent: id, task name, arguments, headers, attempt, workflow link."""
        ...

    @property
    def extra(self) -> dict[str, Any]:
        """Scratch space for middleware, kept from `task_started` to `task_finished`."""
        ...

    @property
    def cancelled(self) -> bool:
        """Someone cancelled this task while it ran."""
        ...


class WorkerView(Protocol):
    """What a hook sees of a worker process (chute.worker.Worker)."""

    @property
    def id(self) -> str: ...

    @property
    def queues(self) -> list[str]: ...

    @property
    def concurrency(self) -> int: ...


class Middleware:
    """No-op base: every hook does nothing until overridden."""

    workflow_steps_only = False  # `wants_success` is never true but for a workflow's steps: others skip the call

    def before_publish(self, envelope: Envelope) -> None:
        """Runs in the producer before a message is encoded; may set headers."""

    def worker_started(self, worker: WorkerView) -> None:
        """Runs in each worker process once it is ready to fetch."""

    def worker_stopping(self, worker: WorkerView) -> None:
        """Runs in each worker process when it begins to shut down."""

    def task_started(self, job: JobView) -> None:
        """Runs in the executing thread just before the task function is called."""

    def task_finished(self, job: JobView, error: BaseException | None, value: Any) -> None:
        """Runs in the executing thread right after the task function returns or raises."""

    def wants_success(self, job: JobView) -> bool:
        """Whether `after_success` must see this job once it succeeds (only such a job gives up having
        its result written in the same transaction as its acknowledgement)."""
        return False

    def after_success(self, job: JobView, value: Any) -> None:
        """Runs in the worker's settling thread for a job `wants_success` claimed: after its SUCCEEDED
        record is stored, before its message is acknowledged. A ChuteError leaves the message
        unacknowledged, so the task runs again: do only what is safe to repeat."""


class Hooks:
    """The App's middleware list, with one fan-out method per hook."""

    def __init__(self) -> None:
        self.items: list[Middleware] = []
        self._publish: list[Middleware] = []
        self._tasks: list[Middleware] = []
        self._success: list[Middleware] = []
        self.success_for_steps_only = True  # every success hook wants workflow steps only (see `wants_success`)

    def add(self, middleware: Middleware) -> None:
        self.items.append(middleware)
        kind = type(middleware)
        if kind.before_publish is not Middleware.before_publish:
            self._publish.append(middleware)
        if kind.task_started is not Middleware.task_started or kind.task_finished is not Middleware.task_finished:
            self._tasks.append(middleware)
        if kind.after_success is not Middleware.after_success:
            self._success.append(middleware)
            self.success_for_steps_only = self.success_for_steps_only and middleware.workflow_steps_only

    def ensure(self, middleware: Middleware) -> None:
        """Add `middleware` unless one of its class is in already (a default several parts rely on)."""
        if not any(type(m) is type(middleware) for m in self.items):
            self.add(middleware)

    @property
    def wraps_tasks(self) -> bool:
        return bool(self._tasks)

    def before_publish(self, envelope: Envelope) -> None:
        for m in self._publish:
            m.before_publish(envelope)

    def worker_started(self, worker: WorkerView) -> None:
        for m in self.items:
            m.worker_started(worker)

    def worker_stopping(self, worker: WorkerView) -> None:
        for m in self.items:
            m.worker_stopping(worker)

    def task_started(self, job: JobView) -> None:
        for m in self._tasks:
            m.task_started(job)

    def task_finished(self, job: JobView, error: BaseException | None, value: Any) -> None:
        for m in reversed(self._tasks):
            m.task_finished(job, error, value)

    @property
    def has_success(self) -> bool:
        return bool(self._success)

    def wants_success(self, job: JobView) -> bool:
        for m in self._success:  # on every success: a plain loop, no generator
            if m.wants_success(job):
                return True
        return False

    def after_success(self, job: JobView, value: Any) -> None:
        for m in self._success:
            if m.wants_success(job):
                m.after_success(job, value)
