"""TaskResult: a handle on one sent call, its state, its result or its error."""

from __future__ import annotations

import builtins
import sys
import time
from typing import Any, Generic, Protocol, TypeVar, cast

from .brokers.store import Store
from .envelope import Codec
from .errors import TaskCancelled, TaskFailed, TaskTimeout
from .results import ResultRecord
from .states import State

R = TypeVar("R")


class Host(Protocol):
    """What a handle needs from its App: the store, the codec, cancellation."""

    @property
    def results(self) -> Store: ...

    @property
    def codec(self) -> Codec: ...

    def cancel(self, task_id: str) -> bool: ...


class TaskResult(Generic[R]):
    """A handle on one sent task: its id, state, and (once finished) its result or error."""

    __slots__ = ("app", "id")

    def __init__(self, app: Host, id: str) -> None:
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


def _outcome(app: Host, rec: ResultRecord) -> Any:
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
