"""AsyncRunner: one event loop on its own thread that runs every `async def` task of a worker."""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from ..errors import TimeLimitExceeded
from .job import Job, Outcome, SuspectGate, _current, suspect_poison

if TYPE_CHECKING:
    from ..core import Core


class AsyncRunner:
    """Schedules coroutine tasks on a private loop; reports each Outcome through `complete`."""

    def __init__(self, complete: Callable[[Outcome], None], gate: SuspectGate | None = None) -> None:
        self._complete = complete
        self._gate = gate
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="chute-asyncio", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, job: Job, app: Core) -> Future[None]:
        return asyncio.run_coroutine_threadsafe(self._execute(job, app), self.loop)

    async def _execute(self, job: Job, app: Core) -> None:
        gate, suspect = self._gate, job.suspect
        if gate is None:
            await self._run_job(job, app)
            return
        key = id(job)
        if suspect or not gate.try_enter(key):  # waiting must not block the loop
            await asyncio.to_thread(gate.enter, key, suspect)
        try:
            await self._run_job(job, app)
        except BaseException:  # no outcome to settle: leave now (settling leaves otherwise)
            gate.leave(key, suspect)
            raise

    async def _run_job(self, job: Job, app: Core) -> None:
        env, hooks = job.envelope, app.hooks
        job.started = time.monotonic()
        if job.suspect:
            poison = await asyncio.to_thread(suspect_poison, app, job)
            if poison is not None:
                self._complete(Outcome(job, None, poison, "", 0.0))
                return
        rate = job.task.options.rate_limit
        while rate is not None and (
                wait := await asyncio.to_thread(app.results.take_token, f"chute.rate:{job.task.name}", rate, 1.0)):
            await asyncio.sleep(wait)
        _current.set(job)  # this coroutine runs in a context of its own
        limit = job.task.options.time_limit
        try:
            if hooks.wraps_tasks:
                hooks.task_started(job)
            coro = job.task.fn(*env.args, **env.kwargs)
            value = await (coro if limit is None else asyncio.wait_for(coro, limit))
        except asyncio.TimeoutError:
            exc = TimeLimitExceeded(f"{env.name} ran longer than its time limit of {limit:g} s")
            outcome = Outcome(job, None, exc, "", time.monotonic() - job.started)
        except BaseException as exc:  # noqa: BLE001 - recorded as the task's failure
            outcome = Outcome(job, None, exc, traceback.format_exc(), time.monotonic() - job.started)
        else:
            outcome = Outcome(job, value, None, "", time.monotonic() - job.started)
        if hooks.wraps_tasks:
            hooks.task_finished(job, outcome.error, outcome.value)
        self._complete(outcome)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()
