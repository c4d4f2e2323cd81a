"""The shapes the operations API returns: one vocabulary for the dashboard, its JSON API and the CLI.

Every text field that can carry user data (arguments, results, errors, reasons) is already
redacted when one of these is built; times are unix seconds.
"""

from __future__ import annotations

from typing import Any

import msgspec


class QueueView(msgspec.Struct):
    queue: str
    ready: int
    in_flight: int
    delayed: int
    dead: int


class RatePoint(msgspec.Struct):
    """Finished attempts in one minute, by outcome."""

    minute: float
    succeeded: int
    failed: int
    retried: int
    dead: int
    cancelled: int


class Overview(msgspec.Struct):
    broker: str  # its URL, without password
    now: float
    queues: list[QueueView]
    workers_alive: int
    tasks_running: int
    rates: list[RatePoint]  # the last hour, a point a minute, oldest first
    succeeded_last_hour: int
    failed_last_hour: int  # failed + dead-lettered
    retried_last_hour: int
    failure_rate: float  # (failed + dead) / finished, over the last hour; 0 when nothing finished


class WorkerView(msgspec.Struct):
    id: str
    state: str  # online, stopping, offline
    hostname: str = ""
    pid: int = 0
    queues: list[str] = msgspec.field(default_factory=list)
    concurrency: int = 0
    started_at: float = 0.0
    heartbeat_at: float = 0.0
    heartbeat_age: float = 0.0
    processed: int = 0
    failed: int = 0
    running: list[str] = msgspec.field(default_factory=list)  # ids of the tasks it runs now


class Status(msgspec.Struct):
    """What `chute status` shows: the overview and the live workers."""

    broker: str
    queues: list[QueueView]
    workers: list[WorkerView]
    overview: Overview


class ErrorView(msgspec.Struct):
    type: str
    message: str
    traceback: str = ""


class Attempt(msgspec.Struct):
    """One attempt of a task, from its events: when it was received, started and finished."""

    attempt: int
    outcome: str  # succeeded, failed, retried, dead, cancelled, or started/received while it runs
    worker: str
    received: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    duration: float = 0.0
    error: str = ""


class TaskView(msgspec.Struct):
    id: str
    state: str
    name: str = ""
    queue: str = ""
    attempt: int = 0
    updated_at: float = 0.0
    args: list[Any] | None = None  # None when chute no longer holds them (see args_note)
    kwargs: dict[str, Any] | None = None
    args_note: str = ""
    result: Any = None
    error: ErrorView | None = None
    timeline: list[Attempt] = msgspec.field(default_factory=list)
    workflow: str = ""
    dead_letter: bool = False  # its message is in the dead-letter queue (replayable)


class TaskSummary(msgspec.Struct):
    id: str
    state: str
    name: str = ""
    queue: str = ""
    attempt: int = 0
    at: float = 0.0  # the time of its latest event
    error: str = ""


class DeadLetterView(msgspec.Struct):
    id: str
    queue: str
    reason: str
    dead_at: float
    task: str = ""
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    attempt: int = 0
    max_retries: int = 0
    undecodable: str = ""  # why the body could not be read, for messages that are not envelopes
    raw: str = ""  # the start of an undecodable body, as text
    error: ErrorView | None = None  # only when asked for one message


class StepView(msgspec.Struct):
    name: str
    task: str
    task_id: str
    state: str
    after: list[str]


class WorkflowView(msgspec.Struct):
    id: str
    kind: str
    state: str
    created: float
    cancelled: bool
    steps: list[StepView]


class WorkflowSummary(msgspec.Struct):
    id: str
    kind: str
    state: str
    created: float
    steps: int
    last_seen: float


class ScheduleView(msgspec.Struct):
    name: str
    every: float | None
    cron: str | None
    tz: str
    missed: str
    next_run: float
    last_run: float | None


class SchedulerView(msgspec.Struct):
    """The scheduler holding the lease, as it last described itself."""

    id: str
    hostname: str
    pid: int
    since: float
    renewed_at: float
    lease: float
    active: bool  # renewed within its lease


class Schedules(msgspec.Struct):
    schedules: list[ScheduleView]
    scheduler: SchedulerView | None


class Health(msgspec.Struct):
    healthy: bool
    broker: bool  # the broker answered
    workers_alive: int
    newest_heartbeat_age: float | None  # seconds; None when no worker is alive
    max_heartbeat_age: float
    reasons: list[str]


class ActionResult(msgspec.Struct):
    action: str
    count: int
