"""One job's run, as the steps the sync and async runners both take, in the same order.

admission (count a suspect's start, wait for a rate-limit token) → `begin` (stamp the start, make
the job current) → task_started hooks, the call → `finish` (the Outcome, task_finished hooks).
Admission is a plan of blocking store calls and waits: the sync runner makes them in its thread,
the async one on a helper thread and with `asyncio.sleep`, so neither blocks what it must not.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable, Generator
from contextvars import Token
from functools import partial
from typing import TYPE_CHECKING, Any

from .job import Job, Outcome, SuspectGate, _current, suspect_poison

if TYPE_CHECKING:
    from ..core import Core

Plan = Generator["Callable[[], Any] | float", Any, "Outcome | None"]  # yields store calls and waits (s)


def admission(job: Job, app: Core) -> Plan | None:
    """What must happen before `job` may start, or None when nothing must (the usual case).

    The plan returns an Outcome when the job must not run (a suspect past `max_deliveries`).
    """
    rate = job.task.options.rate_limit
    if not job.suspect and rate is None:
        return None
    return _admit(job, app, rate)


def _admit(job: Job, app: Core, rate: float | None) -> Plan:
    if job.suspect:
        poison = yield partial(suspect_poison, app, job)
        if poison is not None:
            return Outcome(job, None, poison, "", 0.0)
    key = f"chute.rate:{job.task.name}"
    while rate is not None and (wait := (yield partial(app.results.take_token, key, rate, 1.0))):
        yield wait
    return None


def begin(job: Job) -> Token[Job | None]:
    """Stamp the start, after any wait for a token: time limits and durations count from here."""
    job.started = time.monotonic()
    return _current.set(job)


def finish(job: Job, app: Core, value: Any = None, error: BaseException | None = None, tb: str = "") -> Outcome:
    outcome = Outcome(job, value, error, tb, time.monotonic() - job.started)
    if app.hooks.wraps_tasks:
        app.hooks.task_finished(job, error, value)
    return outcome


def run_sync(job: Job, app: Core, gate: SuspectGate | None = None) -> Outcome:
    """Call a sync task's function in this thread (alone, through `gate`, if it is a suspect).

    Through a gate, the job is still in it when this returns: settling its outcome leaves it.
    """
    if gate is not None:
        gate.enter(id(job), job.suspect)
    return run_entered(job, app, gate)


def run_entered(job: Job, app: Core, gate: SuspectGate | None) -> Outcome:
    """Call a sync task's function once the job is in `gate` (it leaves at once only on an error
    that produced no outcome to settle)."""
    suspect = job.suspect
    try:
        return _run_sync(job, app)
    except BaseException:
        if gate is not None:
            gate.leave(id(job), suspect)
        raise


def _run_sync(job: Job, app: Core) -> Outcome:
    if job.suspect or job.task.options.rate_limit is not None:  # `admission`'s test, saving a call per task
        plan = admission(job, app)
        if plan is not None and (refused := _drive(plan)) is not None:
            return refused
    env, hooks = job.envelope, app.hooks
    token = begin(job)
    try:
        if hooks.wraps_tasks:
            hooks.task_started(job)
        value = job.task.fn(*env.args, **env.kwargs)
    except BaseException as exc:  # noqa: BLE001 - every failure is recorded, never swallowed
        return finish(job, app, None, exc, traceback.format_exc())
    finally:
        _current.reset(token)
    return finish(job, app, value)


def _drive(plan: Plan) -> Outcome | None:
    reply: Any = None
    while True:
        try:
            step = plan.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        if callable(step):
            reply = step()
        else:
            time.sleep(step)
            reply = None


async def drive_async(plan: Plan) -> Outcome | None:
    """Run an admission plan from an event loop: store calls on a thread, waits with asyncio.sleep."""
    reply: Any = None
    while True:
        try:
            step = plan.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        if callable(step):
            reply = await asyncio.to_thread(step)
        else:
            await asyncio.sleep(step)
            reply = None
