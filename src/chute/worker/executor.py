"""AsyncRunner: one event loop on its own thread that runs every `async def` task of a worker."""

from __future__ import annotations

import asyncio
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from ..errors import TimeLimitExceeded
from .job import Job, Outcome, SuspectGate
from .run import admission, begin, drive_async, finish

if TYPE_CHECKING:
    from ..app import App


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

    def submit(self, job: Job, app: App) -> Future[None]:
        return asyncio.run_coroutine_threadsafe(self._execute(job, app), self.loop)

    async def _execute(self, job: Job, app: App) -> None:
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

    async def _run_job(self, job: Job, app: App) -> None:
        plan = admission(job, app)
        if plan is not None and (refused := await drive_async(plan)) is not None:
            self._complete(refused)
            return
        env, limit = job.envelope, job.task.options.time_limit
        begin(job)  # no reset: this coroutine runs in a context of its own
        try:
            if app.hooks.wraps_tasks:
                app.hooks.task_started(job)
            coro = job.task.fn(*env.args, **env.kwargs)
            value = await (coro if limit is None else asyncio.wait_for(coro, limit))
        except asyncio.TimeoutError:
            exc = TimeLimitExceeded(f"{env.name} ran longer than its time limit of {limit:g} s")
            outcome = finish(job, app, None, exc)
        except BaseException as exc:  # noqa: BLE001 - recorded as the task's failure
            outcome = finish(job, app, None, exc, traceback.format_exc())
        else:
            outcome = finish(job, app, value)
        self._complete(outcome)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()
