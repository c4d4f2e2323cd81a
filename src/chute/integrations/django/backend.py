"""ChuteBackend: Django's Tasks framework (django.tasks) enqueued on chute, run by chute workers.

Each Django task is registered as a chute task named by its module path (`myapp.tasks.send_mail`),
so workers, the CLI and the dashboard see it like any other. A result id is the chute task id
followed by that path (`<32 hex>-myapp.tasks.send_mail`): `get_result` from any process knows the
task even while chute only knows "queued".

State mapping: queued and retrying are READY, started is RUNNING, succeeded is SUCCESSFUL; failed,
dead and cancelled are FAILED. Priorities -100..100 map to chute's 0..9 (0 and below: 0, the
lowest; 1..100: 1..9). chute keeps one record per task, so `errors` holds the latest error only,
`started_at` is known while running, and `args`/`kwargs` only on the result `enqueue` returned.

OPTIONS: ENQUEUE_ON_COMMIT (default True: a task enqueued inside `transaction.atomic()` is sent
when it commits and never if it rolls back; the database is DATABASE, default "default"), and the
chute task options RETRIES, RETRY_BACKOFF, TIME_LIMIT, DEAD_LETTER. For a guarantee that survives a
crash between the commit and the send, use chute.outbox.django instead.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime, timezone
from typing import Any

from django.core.exceptions import ImproperlyConfigured

try:
    from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus
except ImportError as exc:  # Django < 6.0
    raise ImportError(f"chute's django.tasks backend needs Django >= 6.0 (pip install 'django>=6'): {exc}") from None
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.exceptions import TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils.json import normalize_json
from django.utils.module_loading import import_string

from ...app import App
from ...envelope import new_id
from ...results import ResultRecord
from ...states import State
from ...task import Task as ChuteTask
from ...worker.job import current_job
from .apps import get_app

_STATUS = {State.QUEUED: TaskResultStatus.READY, State.RETRYING: TaskResultStatus.READY,
           State.STARTED: TaskResultStatus.RUNNING, State.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
           State.FAILED: TaskResultStatus.FAILED, State.DEAD: TaskResultStatus.FAILED,
           State.CANCELLED: TaskResultStatus.FAILED}
_TASK_OPTIONS = {"RETRIES": ("retries", int), "RETRY_BACKOFF": ("retry_backoff", float),
                 "TIME_LIMIT": ("time_limit", float), "DEAD_LETTER": ("dead_letter", bool)}


class ChuteBackend(BaseTaskBackend):  # type: ignore[misc]  # django ships no type hints
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = {str(k).upper(): v for k, v in self.options.items()}
        self.enqueue_on_commit = bool(options.pop("ENQUEUE_ON_COMMIT", True))
        self.database: str = options.pop("DATABASE", "default")
        self.task_options: dict[str, Any] = {}
        for key in list(options):
            if key not in _TASK_OPTIONS:
                raise ImproperlyConfigured(
                    f"TASKS[{alias!r}]['OPTIONS']: unknown option {key!r}; the chute backend knows "
                    f"ENQUEUE_ON_COMMIT, DATABASE, {', '.join(_TASK_OPTIONS)}")
            name, kind = _TASK_OPTIONS[key]
            self.task_options[name] = kind(options.pop(key))

    @property
    def chute(self) -> App:
        return get_app()

    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        self._chute_task(task)  # declared wherever the task is: web processes and workers alike

    def _chute_task(self, task: Task) -> ChuteTask[Any, Any]:
        app, name = self.chute, task.module_path
        found = app.tasks.get(name)
        if found is None:
            found = app.task(name=name, queue=task.queue_name, **self.task_options)(_runner(name, task.func))
        return found

    # -- enqueueing ----------------------------------------------------------------------------
    def _prepare(self, task: Task, args: Any, kwargs: Any) -> tuple[TaskResult, Any]:
        self.validate_task(task)
        options: dict[str, Any] = {"queue": task.queue_name, "priority": chute_priority(task.priority)}
        if task.run_after is not None:
            options["eta"] = _aware(task.run_after)
        result_id = f"{new_id()}-{task.module_path}"
        _, out = self.chute.producer.envelope(self._chute_task(task), tuple(args), dict(kwargs), options,
                                              time.time(), task_id=result_id)
        result = TaskResult(task=task, id=result_id, status=TaskResultStatus.READY, enqueued_at=None,
                            started_at=None, finished_at=None, last_attempted_at=None, args=list(args),
                            kwargs=dict(kwargs), backend=self.alias, errors=[], worker_ids=[])
        return result, out

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        result, out = self._prepare(task, args, kwargs)

        def send() -> None:
            self.chute.producer.publish([out])
            object.__setattr__(result, "enqueued_at", _now())
            task_enqueued.send(type(self), task_result=result)

        if self.enqueue_on_commit:
            from django.db import transaction

            transaction.on_commit(send, using=self.database)  # at once outside a transaction
        else:
            send()
        return result

    async def aenqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Sent at once (async code runs outside `atomic()`), natively on Redis."""
        result, out = self._prepare(task, args, kwargs)
        await self.chute.producer.publish_async([out])
        object.__setattr__(result, "enqueued_at", _now())
        task_enqueued.send(type(self), task_result=result)
        return result

    # -- results -------------------------------------------------------------------------------
    def get_result(self, result_id: str) -> TaskResult:
        return self._result(result_id, self.chute.results.get(result_id))

    async def aget_result(self, result_id: str) -> TaskResult:
        return self._result(result_id, await self.chute.result(result_id).info_async())

    def _result(self, result_id: str, rec: ResultRecord | None) -> TaskResult:
        if rec is None:
            raise TaskResultDoesNotExist(result_id)
        path = result_id[33:] if len(result_id) > 33 and result_id[32] == "-" else rec.name
        try:
            task = import_string(path)
        except ImportError:
            raise TaskResultDoesNotExist(f"{result_id}: task {path!r} cannot be imported here") from None
        return django_result(self.chute, task, result_id, rec, self.alias)


def django_result(app: App, task: Task, result_id: str, rec: ResultRecord, alias: str) -> TaskResult:
    """A Django TaskResult from chute's record of the task."""
    state = rec.state
    at = _datetime(rec.updated_at) if rec.updated_at else None
    attempts = 0 if state is State.QUEUED else rec.attempt + (0 if state is State.RETRYING else 1)
    errors = []
    if rec.error is not None:
        from django.tasks.base import TaskError

        path = rec.error.type if "." in rec.error.type else f"builtins.{rec.error.type}"
        errors.append(TaskError(exception_class_path=path, traceback=rec.error.traceback or rec.error.message))
    result = TaskResult(
        task=task, id=result_id, status=_STATUS.get(state, TaskResultStatus.FAILED),
        enqueued_at=_datetime(int(result_id[:12], 16) / 1000) if _hex(result_id[:12]) else None,
        started_at=at if state is State.STARTED else None,
        finished_at=at if state.finished else None,
        last_attempted_at=at if state is not State.QUEUED else None,
        args=[], kwargs={}, backend=alias, errors=errors, worker_ids=["chute"] * attempts)
    if state is State.SUCCEEDED and rec.value is not None:
        object.__setattr__(result, "_return_value", app.codec.decode_value(rec.value, rec.codec))
    return result


def _runner(path: str, func: Any) -> Any:
    """The chute task that runs the Django task `path` on a worker (async for an `async def` task).

    It sends Django's task_started and task_finished signals, and passes a TaskContext to a task
    declared with takes_context=True.
    """
    import inspect

    if inspect.iscoroutinefunction(func):
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            task, result, context = _starting(path, args, kwargs)
            try:
                value = await task.func(*context, *args, **kwargs)
            except BaseException:
                _finished(result, TaskResultStatus.FAILED)
                raise
            _finished(result, TaskResultStatus.SUCCESSFUL)
            return normalize_json(value)

        return run_async

    def run(*args: Any, **kwargs: Any) -> Any:
        task, result, context = _starting(path, args, kwargs)
        try:
            value = task.func(*context, *args, **kwargs)
        except BaseException:
            _finished(result, TaskResultStatus.FAILED)
            raise
        _finished(result, TaskResultStatus.SUCCESSFUL)
        return normalize_json(value)

    return run


def _starting(path: str, args: Any, kwargs: Any) -> tuple[Task, TaskResult, tuple[Any, ...]]:
    task = import_string(path)
    job = current_job()
    attempt = job.envelope.attempt + 1 if job is not None else 1
    now = _now()
    result = TaskResult(task=task, id=job.envelope.id if job is not None else "", status=TaskResultStatus.RUNNING,
                        enqueued_at=None, started_at=now, finished_at=None, last_attempted_at=now,
                        args=list(args), kwargs=dict(kwargs), backend=task.backend, errors=[],
                        worker_ids=[f"{socket.gethostname()}:{os.getpid()}"] * attempt)
    task_started.send(ChuteBackend, task_result=result)
    return task, result, (TaskContext(task_result=result),) if task.takes_context else ()


def _finished(result: TaskResult, status: TaskResultStatus) -> None:
    object.__setattr__(result, "status", status)
    object.__setattr__(result, "finished_at", _now())
    task_finished.send(ChuteBackend, task_result=result)


def chute_priority(priority: int) -> int:
    """Django's -100..100 onto chute's 0..9: the default (0) and below are chute's default, 0."""
    return 0 if priority <= 0 else 1 + (priority - 1) * 8 // 99


def _hex(s: str) -> bool:
    return len(s) == 12 and all(c in "0123456789abcdef" for c in s)


def _now() -> datetime:
    from django.utils import timezone as dj

    now: datetime = dj.now()
    return now


def _datetime(ts: float) -> datetime:
    from django.conf import settings

    return datetime.fromtimestamp(ts, tz=timezone.utc) if settings.USE_TZ else datetime.fromtimestamp(ts)


def _aware(when: datetime) -> datetime:
    if when.tzinfo is not None:
        return when
    from django.utils import timezone as dj

    aware: datetime = dj.make_aware(when)
    return aware
