"""Task (a registered function you can send) and TaskResult (a handle on one sent call)."""

from __future__ import annotations

import builtins
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast

import msgspec

from .errors import TaskCancelled, TaskFailed, TaskTimeout
from .results import ResultRecord
from .states import State

if TYPE_CHECKING:
    from .app import App

P = ParamSpec("P")
R = TypeVar("R")

Seconds = float | int | timedelta
When = float | int | datetime


def seconds(value: Seconds | None, what: str) -> float | None:
    """Normalise a duration given as seconds or a timedelta."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be seconds (int or float) or a timedelta, not {type(value).__name__}")
    return float(value)


def timestamp(value: When | None, what: str) -> float | None:
    """Normalise a point in time given as unix seconds or a timezone-aware datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{what}={value!r} is a naive datetime; give it a timezone "
                             "(datetime.now(timezone.utc) + ...), so it means one instant everywhere")
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a datetime or unix seconds, not {type(value).__name__}")
    return float(value)


class TaskOptions(msgspec.Struct, frozen=True):
    """A task's declared behaviour; every field has the safe default."""

    queue: str = "default"
    retries: int = 3
    retry_backoff: float = 1.0  # seconds before the first retry; doubles each attempt
    retry_jitter: float = 0.2  # each delay varies by up to ±this fraction
    max_backoff: float = 3600.0
    time_limit: float | None = None
    priority: int = 0
    store_result: bool = True
    dead_letter: bool = True  # after the last retry: dead-letter (DEAD) or just record FAILED
    rate_limit: float | None = None  # starts per second, across every worker


class Signature(msgspec.Struct, frozen=True):
    """A task call not sent yet: what `task.s(...)` returns and `app.send_many` takes."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    options: dict[str, Any] = msgspec.field(default_factory=dict)

    def set(self, **options: Any) -> Signature:
        """A copy with send options (countdown, eta, priority, queue, idempotency_key, …) added."""
        return Signature(self.task, self.args, self.kwargs, {**self.options, **options})

    def __or__(self, other: Any) -> Any:
        """`a.s() | b.s()` is chain(a.s(), b.s()); a group on the left makes a chord."""
        from .workflows import One

        return One(self) | other


class Task(Generic[P, R]):
    """A function registered with an App. Call it to run it here; `delay` or `send` to queue it."""

    def __init__(self, app: App, fn: Callable[P, R], name: str, options: TaskOptions) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.options = options
        self.is_async = _is_coroutine_function(fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.options.queue}>"

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskResult[R]:
        """Queue a call with these arguments; return its handle at once."""
        return self.app._send(self, args, kwargs, {})

    def send(self, args: tuple[Any, ...] | list[Any] = (), kwargs: dict[str, Any] | None = None, *,
             countdown: Seconds | None = None, eta: When | None = None, priority: int | None = None,
             queue: str | None = None, idempotency_key: str | None = None, expires: Seconds | When | None = None,
             headers: dict[str, str] | None = None) -> TaskResult[R]:
        """Queue a call with options: a delay (`countdown` seconds or an `eta`), a priority 0–9,
        another queue, an idempotency key, an expiry (seconds from now or a datetime)."""
        options = {k: v for k, v in (("countdown", countdown), ("eta", eta), ("priority", priority),
                                     ("queue", queue), ("idempotency_key", idempotency_key),
                                     ("expires", expires), ("headers", headers)) if v is not None}
        return self.app._send(self, tuple(args), kwargs or {}, options)

    async def delay_async(self, *args: P.args, **kwargs: P.kwargs) -> TaskResult[R]:
        """`delay` for asyncio code: never blocks the event loop."""
        return await self.app._send_async(self, args, kwargs, {})

    async def send_async(self, args: tuple[Any, ...] | list[Any] = (), kwargs: dict[str, Any] | None = None, *,
                         countdown: Seconds | None = None, eta: When | None = None, priority: int | None = None,
                         queue: str | None = None, idempotency_key: str | None = None,
                         expires: Seconds | When | None = None, headers: dict[str, str] | None = None
                         ) -> TaskResult[R]:
        """`send` for asyncio code, with the same options; never blocks the event loop."""
        options = {k: v for k, v in (("countdown", countdown), ("eta", eta), ("priority", priority),
                                     ("queue", queue), ("idempotency_key", idempotency_key),
                                     ("expires", expires), ("headers", headers)) if v is not None}
        return await self.app._send_async(self, tuple(args), kwargs or {}, options)

    def s(self, *args: P.args, **kwargs: P.kwargs) -> Signature:
        """This call as a Signature, to send later or in a batch."""
        return Signature(self.name, args, kwargs)


def _is_coroutine_function(fn: Callable[..., Any]) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)


class TaskResult(Generic[R]):
    """A handle on one sent task: its id, state, and (once finished) its result or error."""

    __slots__ = ("app", "id")

    def __init__(self, app: App, id: str) -> None:
        self.app = app
        self.id = id

    def __repr__(self) -> str:
        return f"<TaskResult {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def info(self) -> ResultRecord | None:
        """The full latest record (state, attempt, error, timestamps), or None if unknown."""
        return self.app.results.get(self.id)

    @property
    def status(self) -> State:
        rec = self.info()
        return State.UNKNOWN if rec is None else rec.state

    def ready(self) -> bool:
        """True once the task succeeded, failed or went to the dead-letter queue."""
        return self.status.finished

    def cancel(self) -> bool:
        """Cancel the task: a queued or delayed one never starts on any worker, even one started
        later; a running one is told (`current_job().cancelled`) and interrupted after the worker's
        cancel grace; it ends CANCELLED. Returns False, changing nothing, if it had already finished.
        """
        return self.app.cancel(self.id)

    def get(self, timeout: float | None = None) -> R:
        """Wait for the task to finish and return its result, or raise its error.

        A failure is raised as the original exception type when it is a built-in or already
        imported exception class (with the remote traceback attached as a note), else as TaskFailed.
        Raises TaskTimeout if it has not finished within `timeout` seconds.
        """
        rec = self.app.results.wait(self.id, timeout)
        if rec is None or not rec.state.finished:
            state = State.UNKNOWN if rec is None else rec.state
            raise TaskTimeout(f"task {self.id} not finished after {timeout} s (state: {state})")
        return cast(R, _outcome(self.app, rec))

    async def wait(self, timeout: float | None = None) -> R:
        """`get` for asyncio code: the same result or error, without blocking the event loop.

        A store with an asyncio client (Redis) sleeps in the server until the result is written;
        others (SQLite, memory) are read on a thread, at a backoff from 2 ms to 50 ms.
        """
        import asyncio

        results = self.app.results
        native = results.aio
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while True:
            if native is not None:
                rec: ResultRecord | None = await native.wait(self.id, timeout)
            else:
                rec = await asyncio.to_thread(results.get, self.id)
            if rec is not None and rec.state.finished:
                return cast(R, _outcome(self.app, rec))
            remaining = None if deadline is None else deadline - time.monotonic()
            if native is not None or (remaining is not None and remaining <= 0):
                state = State.UNKNOWN if rec is None else rec.state
                raise TaskTimeout(f"task {self.id} not finished after {timeout} s (state: {state})")
            await asyncio.sleep(pause if remaining is None else min(pause, remaining))
            pause = min(pause * 2, 0.05)

    async def info_async(self) -> ResultRecord | None:
        """`info()` for asyncio code."""
        import asyncio

        native = self.app.results.aio
        if native is not None:
            return await native.get(self.id)
        return await asyncio.to_thread(self.app.results.get, self.id)

    async def status_async(self) -> State:
        """`status` for asyncio code."""
        rec = await self.info_async()
        return State.UNKNOWN if rec is None else rec.state

    async def cancel_async(self) -> bool:
        """`cancel()` for asyncio code."""
        import asyncio

        return await asyncio.to_thread(self.app.cancel, self.id)


def _outcome(app: App, rec: ResultRecord) -> Any:
    if rec.state is State.SUCCEEDED:
        return None if rec.value is None else app.codec.decode_value(rec.value, rec.codec)
    err = rec.error
    if err is None:
        if rec.state is State.CANCELLED:
            raise TaskCancelled(f"task {rec.task_id} was cancelled")
        raise TaskFailed("TaskFailed", f"task {rec.task_id} ended {rec.state} with no error recorded")
    raise rebuild_exception(err.type, err.message, err.traceback)


def rebuild_exception(type_name: str, message: str, traceback: str) -> BaseException:
    """The original exception if its class is a built-in or already imported; else TaskFailed.

    Only modules already loaded are consulted: data from a broker never causes an import.
    """
    module, _, qualname = type_name.rpartition(".")
    owner = builtins if module in ("", "builtins") else sys.modules.get(module)
    cls = getattr(owner, qualname, None) if owner is not None and "." not in qualname else None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            exc = cls(message)
        except Exception:
            exc = None
        if exc is not None:
            if traceback and hasattr(exc, "add_note"):
                exc.add_note("Remote traceback:\n" + traceback.rstrip())
            exc.__cause__ = TaskFailed(type_name, message, traceback)
            return exc
    return TaskFailed(type_name, message, traceback)


AsyncFn = Callable[..., Awaitable[Any]]
