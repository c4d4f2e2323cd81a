"""Eager mode: run a task inline at send time, through the same encode/decode as a real worker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..brokers.base import Delivery
from ..envelope import Envelope
from ..states import State
from .job import Job, error_info, result_record
from .run import run_sync

if TYPE_CHECKING:
    from ..core import Core
    from ..task import Task


def run_eager(app: Core, task: Task[Any, Any], env: Envelope) -> str:
    """Run now in this thread and store the outcome; retries are not simulated."""
    env = app.codec.decode(app.codec.encode(env))  # the task sees exactly what a worker would
    job = Job(Delivery(env.queue, env.id, b"", "eager", 1), env, task)
    if task.is_async:
        import asyncio

        from .executor import AsyncRunner

        outcomes: list[Any] = []
        runner = AsyncRunner(outcomes.append)
        try:
            asyncio.run_coroutine_threadsafe(runner._execute(job, app), runner.loop).result()
        finally:
            runner.close()
        outcome = outcomes[0]
    else:
        outcome = run_sync(job, app)
    if outcome.error is None:
        value = None if outcome.value is None else app.codec.encode_value(outcome.value, f"{env.name} result")
        app.results.store([result_record(app, env, State.SUCCEEDED, value=value)])
    else:
        app.results.store([result_record(app, env, State.FAILED, error=error_info(outcome.error, outcome.traceback))])
    return env.id
