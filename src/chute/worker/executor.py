"""Where a worker runs its jobs: executor threads, inline, and one event loop for `async def` tasks."""

from __future__ import annotations

import asyncio
import queue
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from ..errors import TimeLimitExceeded
from .job import Job, Outcome, SuspectGate
from .run import admission, begin, drive_async, finish, run_entered, run_sync
from .speed import Speeds

if TYPE_CHECKING:
    from ..core import Core

_STOP = object()
INLINE_BATCH_SECONDS, INLINE_BATCH_MAX = 0.005, 512  # a batch of proven-fast tasks: claimed together, run here


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


class Executors:
    """Where jobs run: on `concurrency` threads, inline on the consumer's thread (a sync task proven
    fast here: cheaper than a hand-off), or on the event loop (`async def` tasks)."""

    def __init__(self, app: Core, concurrency: int, prefetch: int, gate: SuspectGate, speeds: Speeds,
                 complete: Callable[[Outcome], None]) -> None:
        self.app, self.concurrency, self.prefetch = app, concurrency, prefetch
        self.work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.inline_room = 0  # after a batch that ran entirely inline: how many to claim next time
        self._gate, self._speeds, self._complete = gate, speeds, complete
        self._threads: list[threading.Thread] = []
        self._async: AsyncRunner | None = None

    def start(self) -> None:
        for i in range(self.concurrency):
            self.add_thread(f"chute-exec-{i}")
        if any(t.is_async for t in self.app.tasks.values()):
            self._async = AsyncRunner(self._complete, self._gate)

    def add_thread(self, name: str = "") -> None:
        """Start an executor thread (also to replace one stuck in a task that ignored its interrupt)."""
        t = threading.Thread(target=self._loop, name=name or f"chute-exec-r{len(self._threads)}", daemon=True)
        t.start()
        self._threads.append(t)

    def runs_inline(self, job: Job) -> bool:
        """True for a sync task that has proven fast here (and has no limit that needs a thread)."""
        opts = job.task.options
        if opts.time_limit is not None or opts.rate_limit is not None or job.suspect:
            return False
        return self._speeds.runs_inline(job.task.name)

    def dispatch(self, jobs: list[Job]) -> list[Outcome]:
        """Hand each job to where it runs; run the inline ones now and return their outcomes."""
        inline: list[Job] = []
        for job in jobs:
            if job.task.is_async:
                assert self._async is not None
                job.extra["future"] = self._async.submit(job, self.app)
            elif self.runs_inline(job):
                inline.append(job)
            else:
                self.work.put(job)
        ran: list[Outcome] = []
        gate = self._gate
        for job in inline:
            if gate.try_enter(id(job)):
                ran.append(run_entered(job, self.app, gate))
            else:  # a suspect holds the gate and waits for us to settle: never wait for it here
                self.work.put(job)
        self.inline_room = self._inline_batch(inline) if inline and len(inline) == len(jobs) else 0
        return ran

    def _inline_batch(self, ran: list[Job]) -> int:
        """How many messages to claim next when a whole batch ran inline: as many as run in a few
        milliseconds, so a bigger batch costs no fairness (they are done before anyone could want them)."""
        slowest = max(self._speeds.estimate(j.task.name) for j in ran)
        return max(self.prefetch, min(INLINE_BATCH_MAX, int(INLINE_BATCH_SECONDS / max(slowest, 1e-6))))

    def waiting(self) -> list[Job]:
        """Take back every job no thread has picked up yet."""
        jobs: list[Job] = []
        while True:
            try:
                jobs.append(self.work.get_nowait())
            except queue.Empty:
                return jobs

    def close(self) -> None:
        for _ in self._threads:
            self.work.put(_STOP)
        self._threads.clear()
        if self._async is not None:
            self._async.close()

    def _loop(self) -> None:
        work, app, gate = self.work, self.app, self._gate
        while True:
            job = work.get()
            if job is _STOP:
                return
            job.thread_id = threading.get_ident()
            self._complete(run_sync(job, app, gate))
