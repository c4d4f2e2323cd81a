"""App: configuration, the task registry and the producer API."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from .brokers import DEFAULT_URL, open_broker, open_store, redact_url
from .brokers.base import Outgoing, Queue
from .brokers.shared import queued_marks
from .brokers.store import Pairing, Store
from .envelope import DEFAULT_MAX_MESSAGE_SIZE, VERSION, Codec, CodecName, Envelope, WorkflowLink, new_id
from .errors import ConfigurationError, QueueFull, UnknownTask
from .hooks import Hooks
from .marks import StartedMarks
from .states import State
from .task import Seconds, Signature, Task, TaskOptions, TaskResult, seconds, timestamp

if TYPE_CHECKING:
    from .scheduler import Periodic
    from .workflows import Workflow

P = ParamSpec("P")
R = TypeVar("R")

_SEND_OPTIONS = frozenset({"countdown", "eta", "priority", "queue", "idempotency_key", "expires", "headers"})


class App:
    """One chute application: a broker, a result store, its tasks and their defaults.

    `url` picks the broker (default: $CHUTE_URL, else sqlite:///chute.db). `results` is a Store or a
    URL; by default the broker keeps results itself (RabbitMQ, which keeps none: $CHUTE_RESULTS_URL,
    else a SQLite file per user, server and vhost).
    """

    def __init__(self, url: str | None = None, *, results: Store | str | None = None,
                 codec: CodecName = "json", max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 result_ttl: Seconds = 86400.0, idempotency_window: Seconds = 86400.0,
                 lease: Seconds = 30.0, max_deliveries: int = 3, default_queue: str = "default",
                 eager: bool = False, name: str = "chute", signing_keys: Mapping[str, str | bytes] | None = None
                 ) -> None:
        self.url: str = url if url is not None else (os.environ.get("CHUTE_URL") or DEFAULT_URL)
        self.name = name
        from .signing import Signer

        self.codec = Codec(codec, max_message_size, Signer(signing_keys) if signing_keys is not None else None)
        self.result_ttl = seconds(result_ttl, "result_ttl") or 0.0
        self.idempotency_window = seconds(idempotency_window, "idempotency_window") or 0.0
        self.lease = seconds(lease, "lease") or 30.0
        if self.lease < 1:
            raise ConfigurationError(f"lease={self.lease} s is too short; use at least 1 second")
        if max_deliveries < 1:
            raise ConfigurationError("max_deliveries must be at least 1")
        self.max_deliveries = max_deliveries
        self.default_queue = default_queue
        self.eager = eager
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: dict[str, Periodic] = {}
        self.subscribers: dict[str, Subscriber] = {}
        self.queues: dict[str, QueueLimit] = {}
        self._batch: ContextVar[tuple[list[Outgoing], list[TaskResult[Any] | None]] | None] = ContextVar(
            f"chute_batch_{id(self)}", default=None)
        self.hooks = Hooks()
        self._grouped: Any = None  # aio.Publishers, made on the first async send
        self.broker: Queue = open_broker(self.url)
        store = self._open_store(results)
        self.pairing = Pairing.of(self.broker, store)
        self.broker.bind(store)
        self.marks = StartedMarks(store) if self.pairing.recorder_marks_started else None
        self.results: Store = self.marks or store  # the App's store (`store` names it too)

    def _open_store(self, results: Store | str | None) -> Store:
        if results is None:
            return self.broker if isinstance(self.broker, Store) else open_store(self.url)
        if isinstance(results, str):
            return open_store(results)
        if not isinstance(results, Store):
            raise ConfigurationError(f"results={results!r} is not a chute Store (chute.brokers.store.Store)")
        return results

    @property
    def store(self) -> Store:
        """Where this App keeps results, cancellations, coordination, the worker registry and events."""
        return self.results

    def __repr__(self) -> str:
        return f"<chute.App {self.name} {redact_url(self.url)}>"

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
        _check_priority(priority)
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
        from .scheduler import Periodic

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

    def declare_subscribers(self) -> None:
        """Declare every subscriber group with the broker now (workers also do it when they start)."""
        for s in self.subscribers.values():
            self.broker.declare_group(s.group, s.patterns)

    def publish(self, topic: str, payload: Any = None, *, headers: dict[str, str] | None = None,
                priority: int = 0) -> str:
        """Publish an event to every subscriber group whose pattern matches `topic`; return its id.

        A topic nobody subscribes to is not an error (the broker counts it)."""
        out = self._event(topic, payload, headers, priority)
        batch = self._batch.get()
        if batch is not None:
            batch[0].append(out)
            batch[1].append(None)
            return out.id
        return self.broker.publish([out])[0]

    async def publish_async(self, topic: str, payload: Any = None, *, headers: dict[str, str] | None = None,
                            priority: int = 0) -> str:
        """`publish` for asyncio code, without blocking the event loop."""
        return (await self._publish_async([self._event(topic, payload, headers, priority)]))[0]

    def _event(self, topic: str, payload: Any, headers: dict[str, str] | None, priority: int) -> Outgoing:
        from .topics import check_topic

        check_topic(topic)
        _check_priority(priority)
        self.codec.check_args([payload], {}, f"event {topic}")
        env = Envelope(v=VERSION, id=new_id(), name=topic, created=time.time(), kind="event", queue="",
                       args=[payload], headers=headers or {}, priority=priority)
        self.hooks.before_publish(env)
        return Outgoing("", env.id, self.codec.encode(env), priority, topic=topic)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Send every task and event queued inside the block in one atomic batch, or none if it raises."""
        if self._batch.get() is not None:  # nested: part of the outer batch
            yield
            return
        outs: list[Outgoing] = []
        handles: list[TaskResult[Any] | None] = []
        token = self._batch.set((outs, handles))
        try:
            yield
        finally:
            self._batch.reset(token)
        if outs:
            for handle, actual in zip(handles, self._publish(outs), strict=True):
                if handle is not None:
                    handle.id = actual  # an idempotency key may have named an earlier task

    def get_task(self, name: str) -> Task[Any, Any]:
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTask(f"no task named {name!r} is registered with {self!r}") from None

    # -- sending -------------------------------------------------------------------------------
    def _envelope(self, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                  options: dict[str, Any], now: float, *, task_id: str | None = None,
                  workflow: WorkflowLink | None = None) -> tuple[Envelope, Outgoing]:
        opts = task.options
        self.codec.check_args(args, kwargs, task.name)
        queue, priority, eta, expires, key = opts.queue, opts.priority, None, None, None
        headers: dict[str, str] = {}
        if options:
            unknown = options.keys() - _SEND_OPTIONS
            if unknown:
                raise TypeError(f"unknown send option(s): {', '.join(sorted(unknown))}")
            queue = options.get("queue") or queue
            if "priority" in options:
                priority = options["priority"]
                _check_priority(priority)
            countdown = seconds(options.get("countdown"), "countdown")
            eta = timestamp(options.get("eta"), "eta")
            if countdown is not None:
                if eta is not None:
                    raise ValueError("give countdown or eta, not both")
                eta = now + countdown
            exp = options.get("expires")
            if exp is not None:  # a datetime is an instant; a number or timedelta is from now
                expires = (timestamp(exp, "expires") if isinstance(exp, datetime)
                           else now + (seconds(exp, "expires") or 0.0))
            key = options.get("idempotency_key")
            if key is not None and not isinstance(key, str):
                raise TypeError("idempotency_key must be a str")
            headers = options.get("headers") or {}
        env = Envelope(v=VERSION, id=task_id or new_id(), name=task.name, workflow=workflow, created=now, queue=queue,
                       args=args,  # type: ignore[arg-type]  # a tuple encodes as the array it will arrive as
                       kwargs=kwargs, headers=headers, max_retries=opts.retries, eta=eta, priority=priority,
                       expires=expires, idempotency_key=key)
        self.hooks.before_publish(env)
        body = self.codec.encode(env)
        limit = self.queues.get(queue)
        if limit is None:
            return env, Outgoing(queue, env.id, body, priority, eta, key, self.idempotency_window)
        return env, Outgoing(queue, env.id, body, priority, eta, key, self.idempotency_window,
                             max_length=limit.max_length, on_full="drop_oldest" if limit.on_full == "drop_oldest"
                             else "reject")

    def _send(self, task: Task[Any, R], args: tuple[Any, ...], kwargs: dict[str, Any],
              options: dict[str, Any]) -> TaskResult[R]:
        env, out = self._envelope(task, args, kwargs, options, time.time())
        if self.eager:
            from .worker.eager import run_eager

            return TaskResult(self, run_eager(self, task, env))
        batch = self._batch.get()
        if batch is not None:
            handle: TaskResult[R] = TaskResult(self, env.id)
            batch[0].append(out)
            batch[1].append(handle)
            return handle
        return TaskResult(self, self._publish([out])[0])

    async def _send_async(self, task: Task[Any, R], args: tuple[Any, ...], kwargs: dict[str, Any],
                          options: dict[str, Any]) -> TaskResult[R]:
        if self.eager or self._batch.get() is not None:  # eager runs inline; a batch sends on exit
            return self._send(task, args, kwargs, options)
        _, out = self._envelope(task, args, kwargs, options, time.time())
        return TaskResult(self, (await self._publish_async([out]))[0])

    async def send_task_async(self, name: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
                              **options: Any) -> TaskResult[Any]:
        """`send_task` for asyncio code, without blocking the event loop."""
        return await self._send_async(self.get_task(name), tuple(args), kwargs or {}, options)

    async def send_many_async(self, calls: Sequence[Signature]) -> list[TaskResult[Any]]:
        """`send_many` for asyncio code: one batch, without blocking the event loop."""
        if self.eager:
            return self.send_many(calls)
        now = time.time()
        outs = [self._envelope(self.get_task(sig.task), tuple(sig.args), dict(sig.kwargs), sig.options, now)[1]
                for sig in calls]
        return [TaskResult(self, i) for i in await self._publish_async(outs)]

    async def _publish_async(self, outs: list[Outgoing]) -> list[str]:
        import asyncio

        block = self._block_timeout(outs)
        if block is None:  # concurrent sends of this loop share round trips (aio.py)
            if self._grouped is None:
                from .aio import Publishers

                # one batch in flight at a time unless the broker says more pay (RabbitMQ: 4)
                self._grouped = Publishers(self._publish_once_async, overlap=self.broker.features.publish_overlap)
            ids: list[str] = await self._grouped.publish(outs)
            return ids
        if self.broker.aio is None:
            return await asyncio.to_thread(self._publish, outs)  # `_publish` waits for room, on a thread
        deadline, pause = time.monotonic() + block, 0.001  # `_publish`'s policy, awaiting
        while True:
            try:
                return await self._publish_once_async(outs)
            except QueueFull:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 0.05)

    async def _publish_once_async(self, outs: list[Outgoing]) -> list[str]:
        """One publish: natively where the broker has an asyncio side (redis.asyncio, aio-pika), else on a thread."""
        import asyncio

        native = self.broker.aio
        if native is None:
            return await asyncio.to_thread(self._publish_marked, outs)  # SQLite, memory: off the loop
        if self.pairing.producer_marks_queued:
            await self._mark_queued_async(outs)
        return await native.publish(outs)

    def send_many(self, calls: Sequence[Signature]) -> list[TaskResult[Any]]:
        """Queue many calls in one atomic batch (one round trip); return their handles in order."""
        now = time.time()
        built = [self._envelope(self.get_task(sig.task), tuple(sig.args), dict(sig.kwargs), sig.options, now)
                 for sig in calls]
        if self.eager:
            from .worker.eager import run_eager

            return [TaskResult(self, run_eager(self, self.tasks[env.name], env)) for env, _ in built]
        batch = self._batch.get()
        if batch is not None:
            handles: list[TaskResult[Any]] = [TaskResult(self, env.id) for env, _ in built]
            batch[0].extend(out for _, out in built)
            batch[1].extend(handles)
            return handles
        ids = self._publish([out for _, out in built])
        return [TaskResult(self, i) for i in ids]

    def _block_timeout(self, outs: list[Outgoing]) -> float | None:
        """How long a publish may wait for room: None unless a queue's policy is "block"."""
        blocking = [self.queues[o.queue] for o in outs if o.max_length is not None
                    and self.queues.get(o.queue) is not None and self.queues[o.queue].on_full == "block"]
        return min(q.block_timeout for q in blocking) if blocking else None

    def _publish(self, outs: list[Outgoing]) -> list[str]:
        """Publish; for queues whose policy is "block", wait for room up to their timeout."""
        block = self._block_timeout(outs) if self.queues else None
        if block is None:
            return self._publish_marked(outs)
        deadline = time.monotonic() + block
        pause = 0.001
        while True:
            try:
                return self._publish_marked(outs)
            except QueueFull:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 0.05)

    def _publish_marked(self, outs: list[Outgoing]) -> list[str]:
        """One publish, QUEUED marked first where the queue's store cannot see its messages."""
        if self.pairing.producer_marks_queued:
            self.results.queued(queued_marks(outs))
        return self.broker.publish(outs)

    async def _mark_queued_async(self, outs: list[Outgoing]) -> None:
        import asyncio

        aio = self.results.aio
        if aio is not None:
            await aio.queued(queued_marks(outs))
        else:
            await asyncio.to_thread(self.results.queued, queued_marks(outs))

    def send_task(self, name: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
                  **options: Any) -> TaskResult[Any]:
        """Queue a task by name (it must be registered here, so its options are known)."""
        return self._send(self.get_task(name), tuple(args), kwargs or {}, options)

    def cancel(self, task_id: str) -> bool:
        """Cancel a task by id; False (a no-op) if it had already finished. See TaskResult.cancel."""
        return self.results.cancel(task_id, max(self.result_ttl, 3600.0)) is State.CANCELLED

    def workflow(self, workflow_id: str) -> Workflow:
        """A handle on a workflow started earlier: its state, its steps' states, its result."""
        from .workflows import Workflow

        return Workflow(self, workflow_id)

    def result(self, task_id: str) -> TaskResult[Any]:
        """A handle on a task sent earlier, from its id."""
        return TaskResult(self, task_id)

    async def aclose(self) -> None:
        """Close what the running event loop holds (redis.asyncio connections); `close()` the rest."""
        sides = [side for side in (self.broker.aio, self.results.aio) if side is not None]
        for side in {id(side): side for side in sides}.values():
            await side.aclose()

    def close(self) -> None:
        self.broker.close()
        if self.results is not self.broker:  # type: ignore[comparison-overlap]  # one object may be both
            self.results.close()


class QueueLimit:
    """A queue's maximum length and what happens at it."""

    def __init__(self, max_length: int, on_full: str, block_timeout: float) -> None:
        self.max_length, self.on_full, self.block_timeout = max_length, on_full, block_timeout


class Subscriber:
    """A subscriber group: its topic patterns and the task that handles each event."""

    def __init__(self, group: str, patterns: list[str], task: Task[Any, Any]) -> None:
        self.group, self.patterns, self.task = group, patterns, task


def parse_rate(rate: str | float | None) -> float | None:
    """"100/s", "30/m", "500/h" or a number per second, as starts per second."""
    if rate is None:
        return None
    if isinstance(rate, (int, float)) and not isinstance(rate, bool):
        value, per = float(rate), 1.0
    elif isinstance(rate, str) and rate.count("/") == 1:
        count, unit = rate.split("/")
        units = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}
        try:
            value, per = float(count), units[unit.strip()]
        except (ValueError, KeyError):
            raise ConfigurationError(f"rate_limit={rate!r}: write it like '100/s', '30/m' or '500/h'") from None
    else:
        raise ConfigurationError(f"rate_limit={rate!r}: write it like '100/s', '30/m' or '500/h'")
    if not value > 0:
        raise ConfigurationError(f"rate_limit={rate!r} must be positive")
    return value / per


def _check_priority(priority: Any) -> None:
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise ValueError(f"priority must be an int from 0 (lowest) to 9 (highest), not {priority!r}")


def _default_name(fn: Callable[..., Any]) -> str:
    module = fn.__module__
    if module == "__main__":  # a script: name it as the worker will import it
        path = getattr(sys.modules["__main__"], "__file__", None)
        if path:
            module = os.path.splitext(os.path.basename(path))[0]
    return f"{module}.{fn.__qualname__}"
