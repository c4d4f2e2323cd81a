"""Task: a registered function you can call here or send to a worker (`delay`, `send`), and Signature, a
call not sent yet. TaskResult, the handle a send returns, is in handle.py."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from .canvas import Signature
from .handle import TaskResult, rebuild_exception
from .options import Seconds, TaskOptions, When, seconds, timestamp

__all__ = ["Signature", "Task", "TaskResult", "TaskOptions", "Seconds", "When", "seconds", "timestamp",
           "rebuild_exception"]

P = ParamSpec("P")
R = TypeVar("R")


class Sender(Protocol):
    """The send path a task uses (chute.producer.Producer)."""

    def send(self, task: Task[Any, R], args: tuple[Any, ...], kwargs: dict[str, Any],
             options: dict[str, Any]) -> TaskResult[R]: ...

    async def send_async(self, task: Task[Any, R], args: tuple[Any, ...], kwargs: dict[str, Any],
                         options: dict[str, Any]) -> TaskResult[R]: ...


class Host(Protocol):
    """What a task needs from its App."""

    @property
    def producer(self) -> Sender: ...


class Task(Generic[P, R]):
    """A function registered with an App. Call it to run it here; `delay` or `send` to queue it."""

    def __init__(self, app: Host, fn: Callable[P, R], name: str, options: TaskOptions) -> None:
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
        return self.app.producer.send(self, args, kwargs, {})

    def send(self, args: tuple[Any, ...] | list[Any] = (), kwargs: dict[str, Any] | None = None, *,
             countdown: Seconds | None = None, eta: When | None = None, priority: int | None = None,
             queue: str | None = None, idempotency_key: str | None = None, expires: Seconds | When | None = None,
             headers: dict[str, str] | None = None) -> TaskResult[R]:
        """Queue a call with options: a delay (`countdown` seconds or an `eta`), a priority 0–9,
        another queue, an idempotency key, an expiry (seconds from now or a datetime)."""
        options = {k: v for k, v in (("countdown", countdown), ("eta", eta), ("priority", priority),
                                     ("queue", queue), ("idempotency_key", idempotency_key),
                                     ("expires", expires), ("headers", headers)) if v is not None}
        return self.app.producer.send(self, tuple(args), kwargs or {}, options)

    async def delay_async(self, *args: P.args, **kwargs: P.kwargs) -> TaskResult[R]:
        """`delay` for asyncio code: never blocks the event loop."""
        return await self.app.producer.send_async(self, args, kwargs, {})

    async def send_async(self, args: tuple[Any, ...] | list[Any] = (), kwargs: dict[str, Any] | None = None, *,
                         countdown: Seconds | None = None, eta: When | None = None, priority: int | None = None,
                         queue: str | None = None, idempotency_key: str | None = None,
                         expires: Seconds | When | None = None, headers: dict[str, str] | None = None
                         ) -> TaskResult[R]:
        """`send` for asyncio code, with the same options; never blocks the event loop."""
        options = {k: v for k, v in (("countdown", countdown), ("eta", eta), ("priority", priority),
                                     ("queue", queue), ("idempotency_key", idempotency_key),
                                     ("expires", expires), ("headers", headers)) if v is not None}
        return await self.app.producer.send_async(self, tuple(args), kwargs or {}, options)

    def s(self, *args: P.args, **kwargs: P.kwargs) -> Signature:
        """This call as a Signature, to send later or in a batch."""
        return Signature(self.name, args, kwargs)


def _is_coroutine_function(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn)
