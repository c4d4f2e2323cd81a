"""Producer: the one send path. Builds envelopes, honours the batch context, a full queue's policy and
eager mode, marks QUEUED where the store cannot see the queue, and publishes. Tasks, events, workflows,
the outbox and the integrations send through it; nothing else publishes to a broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from .brokers.base import Outgoing
from .brokers.shared import queued_marks
from .envelope import VERSION, Envelope, WorkflowLink, new_id
from .errors import QueueFull
from .handle import TaskResult
from .options import check_priority, seconds, timestamp

if TYPE_CHECKING:
    from .core import Core
    from .task import Signature, Task

R = TypeVar("R")
SEND_OPTIONS = frozenset({"countdown", "eta", "priority", "queue", "idempotency_key", "expires", "headers"})
_Batch = tuple[list[Outgoing], list[TaskResult[Any] | None]]


class Producer:
    """An App's send path (`app.producer`)."""

    def __init__(self, app: Core) -> None:
        self.app = app
        self._batch: ContextVar[_Batch | None] = ContextVar(f"chute_batch_{id(self)}", default=None)
        self._grouped: Any = None  # aio.Publishers, made on the first async send

    # -- building ------------------------------------------------------------------------------
    def envelope(self, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any],
                 now: float, *, task_id: str | None = None, workflow: WorkflowLink | None = None
                 ) -> tuple[Envelope, Outgoing]:
        """A task call as its envelope and the message that carries it; bad options and arguments raise here."""
        app, opts = self.app, task.options
        app.codec.check_args(args, kwargs, task.name)
        queue, priority, eta, expires, key = opts.queue, opts.priority, None, None, None
        headers: dict[str, str] = {}
        if options:
            unknown = options.keys() - SEND_OPTIONS
            if unknown:
                raise TypeError(f"unknown send option(s): {', '.join(sorted(unknown))}")
            queue = options.get("queue") or queue
            if "priority" in options:
                priority = options["priority"]
                check_priority(priority)
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
        app.hooks.before_publish(env)
        out = Outgoing(queue, env.id, app.codec.encode(env), priority, eta, key, app.idempotency_window)
        return env, (self.limited(out) if app.queues else out)

    def limited(self, out: Outgoing) -> Outgoing:
        """`out` with its queue's declared limit (`App.queue`), which the broker and `publish` enforce."""
        limit = self.app.queues.get(out.queue) if self.app.queues and out.topic is None else None
        if limit is None:
            return out
        return msgspec.structs.replace(out, max_length=limit.max_length,
                                       on_full="drop_oldest" if limit.on_full == "drop_oldest" else "reject")

    def event(self, topic: str, payload: Any, headers: dict[str, str] | None = None, priority: int = 0) -> Outgoing:
        """An event for every subscriber group whose pattern matches `topic`."""
        from .topics import check_topic

        check_topic(topic)
        check_priority(priority)
        self.app.codec.check_args([payload], {}, f"event {topic}")
        env = Envelope(v=VERSION, id=new_id(), name=topic, created=time.time(), kind="event", queue="",
                       args=[payload], headers=headers or {}, priority=priority)
        self.app.hooks.before_publish(env)
        return Outgoing("", env.id, self.app.codec.encode(env), priority, topic=topic)

    # -- sending tasks -------------------------------------------------------------------------
    def send(self, task: Task[Any, R], args: tuple[Any, ...], kwargs: dict[str, Any],
             options: dict[str, Any]) -> TaskResult[R]:
        """Queue one call (or run it now, in eager mode); return its handle."""
        env, out = self.envelope(task, args, kwargs, options, time.time())
        app = self.app
        if app.eager or app.queues or app.pairing.producer_marks_queued or self._batch.get() is not None:
            return self._send_built([(env, out)])[0]
        return TaskResult(app, app.broker.publish([out])[0])  # `delay()`'s hot path: nothing else to do

    def send_many(self, calls: Sequence[Signature]) -> list[TaskResult[Any]]:
        """Queue many calls in one atomic batch (one round trip); return their handles in order."""
        now = time.time()
        return self._send_built([self.envelope(self.app.get_task(sig.task), tuple(sig.args), dict(sig.kwargs),
                                               sig.options, now) for sig in calls])

    def _send_built(self, built: list[tuple[Envelope, Outgoing]]) -> list[TaskResult[Any]]:
        if self.app.eager:
            from .worker.eager import run_eager

            return [TaskResult(self.app, run_eager(self.app, self.app.tasks[env.name], env)) for env, _ in built]
        batch = self._batch.get()
        if batch is not None:
            handles: list[TaskResult[Any]] = [TaskResult(self.app, env.id) for env, _ in built]
            batch[0].extend(out for _, out in built)
            batch[1].extend(handles)
            return handles
        return [TaskResult(self.app, i) for i in self.publish([out for _, out in built])]

    async def send_async(self, task: Task[Any, R], args: tuple[Any, ...], kwargs: dict[str, Any],
                         options: dict[str, Any]) -> TaskResult[R]:
        """`send` for asyncio code, without blocking the event loop."""
        if self.app.eager or self._batch.get() is not None:  # eager runs inline; a batch sends on exit
            return self.send(task, args, kwargs, options)
        _, out = self.envelope(task, args, kwargs, options, time.time())
        return TaskResult(self.app, (await self.publish_async([out]))[0])

    async def send_many_async(self, calls: Sequence[Signature]) -> list[TaskResult[Any]]:
        """`send_many` for asyncio code: one batch, without blocking the event loop."""
        if self.app.eager or self._batch.get() is not None:
            return self.send_many(calls)
        now = time.time()
        outs = [self.envelope(self.app.get_task(sig.task), tuple(sig.args), dict(sig.kwargs), sig.options, now)[1]
                for sig in calls]
        return [TaskResult(self.app, i) for i in await self.publish_async(outs)]

    # -- the batch context ---------------------------------------------------------------------
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
            for handle, actual in zip(handles, self.publish(outs), strict=True):
                if handle is not None:
                    handle.id = actual  # an idempotency key may have named an earlier task

    # -- publishing ----------------------------------------------------------------------------
    def publish(self, outs: list[Outgoing]) -> list[str]:
        """Publish built messages: into the open batch if there is one (their ids as built), else now,
        waiting for room up to the timeout of any queue whose policy is "block"."""
        batch = self._batch.get()
        if batch is not None:
            batch[0].extend(outs)
            batch[1].extend([None] * len(outs))
            return [o.id for o in outs]
        block = self._block_timeout(outs)
        if block is None:
            return self._publish_marked(outs)
        deadline, pause = time.monotonic() + block, 0.001
        while True:
            try:
                return self._publish_marked(outs)
            except QueueFull:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 0.05)

    async def publish_async(self, outs: list[Outgoing]) -> list[str]:
        """`publish` for asyncio code. Concurrent sends of one loop share round trips (aio.py)."""
        if self._batch.get() is not None:
            return self.publish(outs)
        block = self._block_timeout(outs)
        if block is None:
            if self._grouped is None:
                from .aio import Publishers

                # one batch in flight at a time unless the broker says more pay (RabbitMQ: 4)
                self._grouped = Publishers(self._publish_once_async, overlap=self.app.broker.features.publish_overlap)
            ids: list[str] = await self._grouped.publish(outs)
            return ids
        if self.app.broker.aio is None:
            return await asyncio.to_thread(self.publish, outs)  # waits for room, on a thread
        deadline, pause = time.monotonic() + block, 0.001  # `publish`'s policy, awaiting
        while True:
            try:
                return await self._publish_once_async(outs)
            except QueueFull:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 0.05)

    def _block_timeout(self, outs: list[Outgoing]) -> float | None:
        """How long a publish may wait for room: None unless a queue's policy is "block"."""
        queues = self.app.queues
        if not queues:
            return None
        blocking = [queues[o.queue] for o in outs if o.max_length is not None
                    and queues.get(o.queue) is not None and queues[o.queue].on_full == "block"]
        return min(q.block_timeout for q in blocking) if blocking else None

    def _publish_marked(self, outs: list[Outgoing]) -> list[str]:
        """One publish, QUEUED marked first where the queue's store cannot see its messages."""
        if self.app.pairing.producer_marks_queued:
            self.app.results.queued(queued_marks(outs))
        return self.app.broker.publish(outs)

    async def _publish_once_async(self, outs: list[Outgoing]) -> list[str]:
        """One publish: natively where the broker has an asyncio side (redis.asyncio, aio-pika), else on a thread."""
        native = self.app.broker.aio
        if native is None:
            return await asyncio.to_thread(self._publish_marked, outs)  # SQLite, memory: off the loop
        if self.app.pairing.producer_marks_queued:
            marks, store = queued_marks(outs), self.app.results
            if store.aio is not None:
                await store.aio.queued(marks)
            else:
                await asyncio.to_thread(store.queued, marks)
        return await native.publish(outs)
