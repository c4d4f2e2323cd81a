"""App: one chute application — its tasks, schedules, subscribers and queue limits, declared with
decorators, and the producer API (`delay` lives on each Task)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from .brokers.store import Store
from .canvas import Signature
from .core import Core, Subscriber
from .envelope import DEFAULT_MAX_MESSAGE_SIZE, CodecName
from .errors import ConfigurationError
from .handle import TaskResult
from .options import QueueLimit, Seconds, TaskOptions, check_priority, parse_rate, seconds
from .producer import Producer
from .task import Task

if TYPE_CHECKING:
    from .canvas import Canvas
    from .workflows import Workflow

P = ParamSpec("P")
R = TypeVar("R")


class App(Core):
    """One chute application: a broker, a result store, its tasks and their defaults.

    `url` picks the broker (default: $CHUTE_URL, else sqlite:///chute.db). `results` is a Store or a
    URL; by default the broker keeps results itself (RabbitMQ, which keeps none: $CHUTE_RESULTS_URL,
    else a SQLite file per user, server and vhost).
    """

    producer: Producer  # the one send path

    def __init__(self, url: str | None = None, *, results: Store | str | None = None,
                 codec: CodecName = "json", max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 result_ttl: Seconds = 86400.0, idempotency_window: Seconds = 86400.0,
                 lease: Seconds = 30.0, max_deliveries: int = 3, default_queue: str = "default",
                 eager: bool = False, name: str = "chute", signing_keys: Mapping[str, str | bytes] | None = None
                 ) -> None:
        super().__init__(url, results=results, codec=codec, max_message_size=max_message_size,
                         result_ttl=result_ttl, idempotency_window=idempotency_window, lease=lease,
                         max_deliveries=max_deliveries, default_queue=default_queue, eager=eager, name=name,
                         signing_keys=signing_keys)
        self.producer = Producer(self)

    # -- declaring tasks -----------------------------------------------------------------------
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(self, *, name: str | None = None, queue: str | None = None, retries: int = 3,
             retry_backoff: Seconds = 1.0, retry_jitter: float = 0.2, max_backoff: Seconds = 3600.0,
             time_limit: Seconds | None = None, priority: int = 0, store_result: bool = True,
             dead_letter: bool = True, rate_limit: str | float | None = None
             ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(  # type: ignore[misc]  # mypy cannot match a positional-only optional against overload 2
            self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None, queue: str | None = None,
             retries: int = 3, retry_backoff: Seconds = 1.0, retry_jitter: float = 0.2,
             max_backoff: Seconds = 3600.0, time_limit: Seconds | None = None, priority: int = 0,
             store_result: bool = True, dead_letter: bool = True, rate_limit: str | float | None = None) -> Any:
        """Register a function (sync or `async def`) as a task; use bare or with options."""
        check_priority(priority)
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        if not 0 <= retry_jitter < 1:
            raise ValueError("retry_jitter is a fraction in [0, 1)")
        limit = seconds(time_limit, "time_limit")
        if limit is not None and limit <= 0:
            raise ValueError("time_limit must be positive")
        options = TaskOptions(queue or self.default_queue, retries, seconds(retry_backoff, "retry_backoff") or 0.0,
                              retry_jitter, seconds(max_backoff, "max_backoff") or 0.0, limit, priority,
                              store_result, dead_letter, parse_rate(rate_limit))

        def register(f: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or _default_name(f)
            if task_name in self.tasks and self.tasks[task_name].fn is not f:
                raise ConfigurationError(f"two tasks are named {task_name!r}; give one a name=...")
            t: Task[Any, Any] = Task(self, f, task_name, options)
            self.tasks[task_name] = t
            return t

        return register(fn) if fn is not None else register

    def periodic(self, *, every: Seconds | None = None, cron: str | None = None, tz: str = "UTC",
                 missed: str = "skip", args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
                 **task_options: Any) -> Callable[[Callable[P, R]], Task[P, R]]:
        """Register a task that `chute scheduler` sends every `every` seconds or on a `cron`
        expression in time zone `tz`. After downtime, missed slots are skipped (`missed="skip"`) or
        the latest is sent once (`"run_once"`). Bad expressions and zones fail here, at declaration."""
        from .schedule import Periodic

        def register(f: Callable[P, R]) -> Task[P, R]:
            t: Task[P, R] = self.task(**task_options)(f)
            self.schedules[t.name] = Periodic.declare(t, every, cron, tz, missed, tuple(args), kwargs or {})
            return t

        return register

    def queue(self, name: str, *, max_length: int, on_full: str = "reject", block_timeout: Seconds = 5.0) -> None:
        """Limit how many messages may wait in queue `name`. At the limit, `on_full` decides:
        "reject" raises QueueFull at once, "block" waits up to `block_timeout` seconds for room
        (then QueueFull), "drop_oldest" makes room by deleting the oldest waiting messages (counted)."""
        if on_full not in ("reject", "block", "drop_oldest"):
            raise ConfigurationError(f"queue {name!r}: on_full={on_full!r}; use 'reject', 'block' or 'drop_oldest'")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ConfigurationError(f"queue {name!r}: max_length must be a positive int, not {max_length!r}")
        self.queues[name] = QueueLimit(max_length, on_full, seconds(block_timeout, "block_timeout") or 0.0)

    def subscriber(self, patterns: str | Sequence[str], *, group: str,
                   **task_options: Any) -> Callable[[Callable[P, R]], Task[P, R]]:
        """Register `fn(payload)` as subscriber group `group` for topic patterns (`order.*`,
        `audit.#`). Every group gets every matching event; workers of one group share them; a
        group receives events from when it was first declared (its first worker start, or
        `declare_subscribers()`), even while none of its workers run. Task options (retries, …) apply."""
        from .topics import check_group, check_pattern, group_queue

        pats = [patterns] if isinstance(patterns, str) else list(patterns)
        if not pats:
            raise ConfigurationError(f"subscriber group {group!r}: give at least one topic pattern")
        for p in pats:
            check_pattern(p)
        check_group(group)
        if group in self.subscribers:
            raise ConfigurationError(f"subscriber group {group!r} is declared twice; one group, one handler")
        if "queue" in task_options:
            raise ConfigurationError("a subscriber's queue is its group's; do not pass queue=")

        def register(f: Callable[P, R]) -> Task[P, R]:
            name = task_options.pop("name", None) or f"chute.subscriber.{group}"
            t: Task[P, R] = self.task(name=name, queue=group_queue(group), **task_options)(f)
            self.subscribers[group] = Subscriber(group, pats, t)
            return t

        return register

    # -- sending -------------------------------------------------------------------------------
    def publish(self, topic: str, payload: Any = None, *, headers: dict[str, str] | None = None,
                priority: int = 0) -> str:
        """Publish an event to every subscriber group whose pattern matches `topic`; return its id.

        A topic nobody subscribes to is not an error (the store counts it: `chute.unrouted:<topic>`)."""
        return self.producer.publish([self.producer.event(topic, payload, headers, priority)])[0]

    async def publish_async(self, topic: str, payload: Any = None, *, headers: dict[str, str] | None = None,
                            priority: int = 0) -> str:
        """`publish` for asyncio code, without blocking the event loop."""
        return (await self.producer.publish_async([self.producer.event(topic, payload, headers, priority)]))[0]

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Send every task and event queued inside the block in one atomic batch, or none if it raises."""
        with self.producer.batch():
            yield

    def send_task(self, name: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
                  **options: Any) -> TaskResult[Any]:
        """Queue a task by name (it must be registered here, so its options are known)."""
        return self.producer.send(self.get_task(name), tuple(args), kwargs or {}, options)

    async def send_task_async(self, name: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
                              **options: Any) -> TaskResult[Any]:
        """`send_task` for asyncio code, without blocking the event loop."""
        return await self.producer.send_async(self.get_task(name), tuple(args), kwargs or {}, options)

    def send_many(self, calls: Sequence[Signature]) -> list[TaskResult[Any]]:
        """Queue many calls in one atomic batch (one round trip); return their handles in order."""
        return self.producer.send_many(calls)

    async def send_many_async(self, calls: Sequence[Signature]) -> list[TaskResult[Any]]:
        """`send_many` for asyncio code: one batch, without blocking the event loop."""
        return await self.producer.send_many_async(calls)

    def start_workflow(self, canvas: Canvas) -> Workflow:
        """Start a chain, group, chord or DAG (what `canvas.run(app)` does); return its handle."""
        from .workflows import start

        return start(self, canvas)

    def workflow(self, workflow_id: str) -> Workflow:
        """A handle on a workflow started earlier: its state, its steps' states, its result."""
        from .workflows import Workflow

        return Workflow(self, workflow_id)


__all__ = ["App", "QueueLimit", "Subscriber", "parse_rate"]


def _default_name(fn: Callable[..., Any]) -> str:
    module = fn.__module__
    if module == "__main__":  # a script: name it as the worker will import it
        path = getattr(sys.modules["__main__"], "__file__", None)
        if path:
            module = os.path.splitext(os.path.basename(path))[0]
    return f"{module}.{fn.__qualname__}"
