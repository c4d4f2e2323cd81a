"""One message's path through a worker, as small steps: decode → check → run (run.py) → decide (settle.py).

Each step is a plain function so it can be tested alone; the consumer strings them together.
"""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..brokers.base import Delivery
from ..envelope import Envelope
from ..errors import DecodeError, TaskExpired, UnsupportedVersion, WorkerLost
from ..results import ErrorInfo, ResultRecord
from ..signing import BadSignature
from ..states import State
from ..task import Task
from ..topics import GROUP_PREFIX

if TYPE_CHECKING:
    from ..core import Core


@dataclass(slots=True, eq=False)
class Job:
    """A claimed message, decoded, with the task that will run it."""

    delivery: Delivery
    envelope: Envelope
    task: Task[Any, Any]
    started: float = 0.0  # monotonic; 0 until a thread picks it up
    received: float = 0.0  # unix time the worker took it from the broker
    thread_id: int = 0
    interrupted: bool = False  # a time-limit or cancel exception was sent
    interrupted_at: float = 0.0  # monotonic time it was sent (0 once the worker gave up on the task)
    cancelled: bool = False  # someone cancelled this task while it ran: stop soon (check it in long loops)
    cancel_deadline: float = 0.0  # monotonic time after which the worker interrupts it
    extra: dict[str, Any] = field(default_factory=dict)  # scratch space for middleware
    suspect: bool = field(init=False)  # redelivered: its last holder died holding it (it runs alone: SuspectGate)

    def __post_init__(self) -> None:
        self.suspect = self.delivery.deliveries > 1  # read five times a task: an attribute, not a property


_current: ContextVar[Job | None] = ContextVar("chute_current_job", default=None)


def current_job() -> Job | None:
    """The job this thread (or asyncio task) is running, or None outside a task."""
    return _current.get()


class SuspectGate:
    """Runs suspects (messages whose earlier holder died) alone in this process.

    A task that kills its process would otherwise take the tasks running beside it down with it,
    again and again, since they come back together; alone, only it is blamed. Suspects are rare,
    so normal tasks take no lock: a task announces itself, then looks for a suspect; a suspect
    raises its flag, then waits for announced tasks to leave. Under the GIL one of the two always
    sees the other, so they never run together.

    A task leaves when its outcome is settled (acked and stored), not when it returns: if the next
    suspect started in between and killed the process, a start would be counted against a task
    that had finished, and three of those dead-letter a healthy task. So whoever settles calls
    `leave`, and that thread must never wait in `enter` (it uses `try_enter`).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self.exclusive = False
        self._active: dict[int, None] = {}

    def try_enter(self, key: int) -> bool:
        """Enter as a normal task unless a suspect holds or awaits the gate (never blocks)."""
        self._active[key] = None
        if self.exclusive:
            self._active.pop(key, None)
            self._notify()
            return False
        return True

    def enter(self, key: int, suspect: bool) -> None:
        if not suspect:
            while not self.try_enter(key):
                with self._cond:
                    while self.exclusive:
                        self._cond.wait()
            return
        with self._cond:
            while self.exclusive:
                self._cond.wait()
            self.exclusive = True
            while self._active:
                self._cond.wait(0.01)

    def leave(self, key: int, suspect: bool) -> None:
        if suspect:
            with self._cond:
                self.exclusive = False
                self._cond.notify_all()
            return
        self._active.pop(key, None)
        if self.exclusive:
            self._notify()

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()


@dataclass(slots=True)
class Outcome:
    """What running a job produced: a value, or an error with its traceback text."""

    job: Job
    value: Any = None
    error: BaseException | None = None
    traceback: str = ""
    duration: float = 0.0


@dataclass(slots=True)
class Reject:
    """A message that cannot run: dead-letter it (or ack it, recording `state`) with a reason."""

    delivery: Delivery
    reason: str
    envelope: Envelope | None = None
    state: State = State.DEAD
    error: ErrorInfo | None = None


def prepare(app: Core, delivery: Delivery) -> Job | Reject | None:
    """Turn a delivery into a runnable Job, a Reject, or None (already done: ack it)."""
    limit = app.codec.max_message_size + 1024  # room for a signature trailer
    if len(delivery.body) > limit:  # written past a producer's check: refused unread
        return Reject(delivery, f"too_large: {len(delivery.body):,} bytes, over the limit of "
                                f"{app.codec.max_message_size:,} (App(max_message_size=...))")
    try:
        env = app.codec.decode(delivery.body)
    except UnsupportedVersion as exc:
        return Reject(delivery, f"unsupported_version: {exc}")
    except BadSignature as exc:
        return Reject(delivery, str(exc))
    except DecodeError as exc:
        return Reject(delivery, f"decode_error: {exc}")
    if env.kind == "event":
        group = delivery.queue.removeprefix(GROUP_PREFIX)
        subscriber = app.subscribers.get(group)
        if subscriber is None:
            return Reject(delivery, f"unknown_subscriber: no subscriber group {group!r} in this worker", env)
        env.id = delivery.id  # each group's copy has its own id, result and retries
        task: Task[Any, Any] | None = subscriber.task
    else:
        task = app.tasks.get(env.name)
    if task is None:
        return Reject(delivery, f"unknown_task: no task named {env.name!r} is registered in this worker", env)
    if env.expires is not None and env.expires < time.time():
        err = ErrorInfo(_qualname(TaskExpired), f"expired at {env.expires:.3f} before a worker ran it")
        return Reject(delivery, "expired", env, State.FAILED, err)
    if env.idempotency_key is not None:
        rec = app.results.get(env.id)
        if rec is not None and rec.state is State.SUCCEEDED:
            return None  # a redelivery of work already done: acknowledge without running
    return Job(delivery, env, task)


def suspect_poison(app: Core, job: Job) -> WorkerLost | None:
    """For a redelivered message, count this start; past the limit, the error to dead-letter it with.

    A message comes back when its worker died holding it. Counting *starts* (not deliveries) keeps
    messages that were only prefetched beside a poison message from being blamed for its crashes.
    The first run is never counted (no write on the hot path), so the limit allows that many runs.
    """
    if not job.suspect:
        return None
    env = job.envelope
    starts = app.results.count_start(env.id, env.attempt, max(app.result_ttl, 3600.0))
    if starts + 1 <= app.max_deliveries:
        return None
    return WorkerLost(f"worker_lost: its worker died while running it {starts} times "
                      f"(max_deliveries={app.max_deliveries}); not run again")


def _qualname(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def error_info(exc: BaseException, tb: str) -> ErrorInfo:
    return ErrorInfo(_qualname(type(exc)), str(exc), tb)


def result_record(app: Core, env: Envelope, state: State, *, value: bytes | None = None,
                  error: ErrorInfo | None = None, now: float | None = None) -> ResultRecord:
    return record_of(env, state, app.codec.name, app.result_ttl, time.time() if now is None else now, value, error)


def record_of(env: Envelope, state: State, codec: str, ttl: float, now: float, value: bytes | None = None,
              error: ErrorInfo | None = None) -> ResultRecord:
    """The record of `env` in `state` at `now`, expiring `ttl` seconds later (never for 0)."""
    return ResultRecord(env.id, state, env.name, env.queue, value, codec, error, env.attempt, now,
                        now + ttl if ttl else None)
