"""Stopping running tasks that must stop: cancelled ones, and sync ones past their time limit.

A task cancelled while it runs is told first (`job.cancelled`, for long loops to check) and
interrupted once its grace is over; a sync task past its `time_limit` is interrupted at once (an
async one is bounded by `asyncio.wait_for` instead). A task still running `terminate_after` seconds
after its interrupt is blocked outside Python, where no exception reaches it: the worker gives up on it.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Sequence

from ..brokers.store import ResultStore
from ..errors import ChuteError, TaskCancelled, TimeLimitExceeded
from .job import Job
from .outage import OutageLog

log = logging.getLogger("chute.worker")
CANCEL_CHECK_EVERY = 0.5  # seconds between checks for cancelled running tasks (only while some run)
TERMINATE_AFTER = 5.0  # seconds an interrupted task may take to stop before the worker gives up on it


class Limits:
    """Checks the running jobs (from the heartbeat thread); `give_up(job, error)` settles a stuck one."""

    def __init__(self, results: ResultStore, outage: OutageLog, cancel_grace: float,
                 give_up: Callable[[Job, BaseException], None]) -> None:
        self.results = results
        self.cancel_grace = cancel_grace
        self.terminate_after = TERMINATE_AFTER
        self._outage = outage
        self._give_up = give_up

    def poll_cancellations(self, running: Sequence[Job], now: float) -> None:
        """Mark the running jobs cancelled since the last poll: each is interrupted after its grace."""
        asked = [j for j in running if not j.cancelled]
        if not asked:
            return
        try:
            cancelled = self.results.cancelled([j.envelope.id for j in asked])
        except ChuteError as exc:
            self._outage.error("could not check cancellations: %s", exc)
            return
        for job in asked:
            if job.envelope.id in cancelled:
                job.cancelled, job.cancel_deadline = True, now + self.cancel_grace
                log.warning("task %s %s was cancelled while running; interrupting it in %g s unless it stops",
                            job.envelope.name, job.envelope.id, self.cancel_grace)

    def enforce(self, running: Sequence[Job], now: float) -> None:
        """Interrupt what is due; give up on what ignored its interrupt for `terminate_after` seconds."""
        for job in running:
            if job.interrupted:
                if job.interrupted_at and now - job.interrupted_at > self.terminate_after:
                    job.interrupted_at = 0.0  # once
                    self._give_up(job, _why_interrupted(job))
                continue
            if job.cancelled and now >= job.cancel_deadline:
                job.interrupted, job.interrupted_at = True, now
                interrupt(job, TaskCancelled)
                continue
            limit = job.task.options.time_limit
            if limit is not None and now - job.started > limit and not job.task.is_async:
                job.interrupted, job.interrupted_at = True, now
                log.warning("task %s %s exceeded its time limit of %g s; interrupting it",
                            job.envelope.name, job.envelope.id, limit)
                interrupt(job, TimeLimitExceeded)


def interrupt(job: Job, error: type[BaseException]) -> None:
    """Raise `error` inside a running sync task's thread, or cancel an async task's coroutine."""
    future = job.extra.get("future")
    if future is not None:
        future.cancel()
    elif job.thread_id:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(job.thread_id), ctypes.py_object(error))


def _why_interrupted(job: Job) -> BaseException:
    name = job.envelope.name
    if job.cancelled:
        return TaskCancelled(f"{name} was cancelled while running")
    return TimeLimitExceeded(f"{name} ran longer than its time limit of {job.task.options.time_limit:g} s")
