"""Core: what an App is below its declarations — configuration, the queue and the store it pairs them
with, its registries. Everything under the App (tasks, the producer, the worker, the scheduler,
workflows) is typed against Core and never imports the App, so the package has no import cycle."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .brokers import DEFAULT_URL, open_broker, open_store, redact_url
from .brokers.base import Outgoing, Queue
from .brokers.pairing import Pairing
from .brokers.store import Store
from .envelope import DEFAULT_MAX_MESSAGE_SIZE, Codec, CodecName, Envelope, WorkflowLink
from .errors import ConfigurationError, UnknownTask
from .handle import TaskResult
from .hooks import Hooks
from .marks import StartedMarks
from .options import QueueLimit, Seconds, seconds
from .schedule import Periodic
from .states import State

if TYPE_CHECKING:
    from .task import Signature, Task

R = TypeVar("R")


class SendPath(Protocol):
    """The App's one send path (chute.producer.Producer), as the parts under the App see it."""

    def envelope(self, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 options: dict[str, Any], now: float, *, task_id: str | None = None,
                 workflow: WorkflowLink | None = None) -> tuple[Envelope, Outgoing]: ...

    def event(self, topic: str, payload: Any, headers: dict[str, str] | None = None,
              priority: int = 0) -> Outgoing: ...

    def send(self, task: Task[Any, R], args: tuple[Any, ...], kwargs: dict[str, Any],
             options: dict[str, Any]) -> TaskResult[R]: ...

    async def send_async(self, task: Task[Any, R], args: tuple[Any, ...], kwargs: dict[str, Any],
                         options: dict[str, Any]) -> TaskResult[R]: ...

    def send_many(self, calls: Sequence[Signature]) -> list[TaskResult[Any]]: ...

    def publish(self, outs: list[Outgoing]) -> list[str]: ...

    async def publish_async(self, outs: list[Outgoing]) -> list[str]: ...


class Subscriber:
    """A subscriber group: its topic patterns and the task that handles each event."""

    def __init__(self, group: str, patterns: list[str], task: Task[Any, Any]) -> None:
        self.group, self.patterns, self.task = group, patterns, task


class Core:
    """An App's configuration, its queue and store, and its registries (see `chute.App`)."""

    producer: SendPath  # set by the App

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
        self.hooks = Hooks()
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

    def get_task(self, name: str) -> Task[Any, Any]:
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTask(f"no task named {name!r} is registered with {self!r}") from None

    def declare_subscribers(self) -> None:
        """Declare every subscriber group with the broker now (workers also do it when they start)."""
        for s in self.subscribers.values():
            self.broker.declare_group(s.group, s.patterns)

    def cancel(self, task_id: str) -> bool:
        """Cancel a task by id; False (a no-op) if it had already finished. See TaskResult.cancel."""
        return self.results.cancel(task_id, max(self.result_ttl, 3600.0)) is State.CANCELLED

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
