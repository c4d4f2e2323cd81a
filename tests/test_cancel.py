"""Cancellation that sticks: queued and delayed tasks never start, running ones are stopped."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import chute
from chute import State
from chute.worker.speed import LEARN_RUNS
from helpers import wait_for, worker_thread


def test_queued_and_delayed_tasks_never_start_even_on_a_later_worker(app: chute.App) -> None:
    ran: list[int] = []

    @app.task
    def f(i: int) -> int:
        ran.append(i)
        return i

    queued, delayed, kept = f.delay(1), f.send((2,), countdown=0.3), f.delay(3)
    assert queued.cancel() and delayed.cancel()
    assert queued.status is State.CANCELLED and delayed.status is State.CANCELLED
    with worker_thread(app):  # started after the cancellation, as a worker that was offline would be
        assert kept.get(timeout=10) == 3
        time.sleep(0.5)  # the delayed one falls due meanwhile
        wait_for(lambda: sum(s.ready + s.delayed + s.in_flight for s in app.broker.stats()) == 0, what="drained")
    assert ran == [3]
    with pytest.raises(chute.TaskCancelled):
        queued.get(timeout=1)


def test_cancelled_tasks_among_a_batch_of_proven_fast_ones_never_start(app: chute.App) -> None:
    """A task that has proven fast runs in whole batches on the worker's own thread, checked for
    cancellation once a batch (on a broker that keeps the results, by the fetch itself): the
    cancelled ones never start, every other one runs once."""
    ran: list[int] = []

    @app.task
    def f(i: int) -> None:
        ran.append(i)

    with worker_thread(app) as w:
        for h in [f.delay(-1) for _ in range(LEARN_RUNS + 5)]:
            h.get(timeout=10)
        wait_for(lambda: w._speeds.runs_inline(f.name), what="the task to qualify to run inline")
        with app.batch():  # the cancellations land before the messages: the worker fetches all 60 at once
            handles = [f.delay(i) for i in range(60)]
            assert all(h.cancel() for h in handles[::7])
        wait_for(lambda: len([i for i in ran if i >= 0]) >= 51, what="the other 51 tasks")
        wait_for(lambda: sum(s.ready + s.in_flight for s in app.broker.stats()) == 0, what="drained")
    assert sorted(i for i in ran if i >= 0) == [i for i in range(60) if i % 7]
    assert all(h.status is State.CANCELLED for h in handles[::7])


def test_cancelling_a_finished_task_is_a_no_op_that_says_so(app: chute.App) -> None:
    @app.task
    def f() -> str:
        return "done"

    r = f.delay()
    with worker_thread(app):
        assert r.get(timeout=10) == "done"
    assert r.cancel() is False
    assert r.status is State.SUCCEEDED and r.get(timeout=1) == "done"


def test_a_running_task_is_told_and_can_stop_cooperatively(app: chute.App) -> None:
    started = threading.Event()

    @app.task
    def long_loop() -> str:
        started.set()
        job = chute.current_job()
        assert job is not None
        for _ in range(1000):
            if job.cancelled:
                raise chute.TaskCancelled("stopping as asked")
            time.sleep(0.01)
        return "finished anyway"

    r = long_loop.delay()
    with worker_thread(app):
        started.wait(5)
        assert r.cancel()
        with pytest.raises(chute.TaskCancelled):
            r.get(timeout=10)
    assert r.status is State.CANCELLED


def test_a_task_that_ignores_cancellation_is_interrupted_after_the_grace(app: chute.App) -> None:
    started = threading.Event()

    @app.task
    def stubborn() -> None:
        started.set()
        while True:
            time.sleep(0.01)

    @app.task
    async def stubborn_async() -> None:
        await asyncio.sleep(60)

    r, a = stubborn.delay(), stubborn_async.delay()
    with worker_thread(app, cancel_grace=0.3) as w:
        started.wait(5)
        wait_for(lambda: a.status is State.STARTED, what="async started")
        t0 = time.monotonic()
        assert r.cancel() and a.cancel()
        wait_for(lambda: r.ready() and a.ready(), timeout=10, what="both stopped")
        assert time.monotonic() - t0 < 3
        assert w.processed == 0
    assert r.status is State.CANCELLED and a.status is State.CANCELLED
    assert sum(s.in_flight + s.ready for s in app.broker.stats()) == 0  # acknowledged, not redelivered
