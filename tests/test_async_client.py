"""The awaitable producer API: enqueue and wait from asyncio code without blocking the loop."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import chute
from helpers import worker_thread


@pytest.fixture(params=["memory", "sqlite"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> chute.App:
    return chute.App("memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/a.db")


def test_delay_async_send_async_and_wait(app: chute.App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    async def main() -> list[int]:
        first = await add.delay_async(1, 2)
        second = await add.send_async((3, 4), priority=5, countdown=0.05)
        many = await app.send_many_async([add.s(i, i) for i in range(10)])
        return [await r.wait(timeout=10) for r in (first, second, *many)]

    with worker_thread(app):
        assert asyncio.run(main()) == [3, 7] + [2 * i for i in range(10)]


def test_enqueueing_5000_per_second_keeps_the_loop_responsive(app: chute.App) -> None:
    @app.task
    def noop(i: int) -> None:
        pass

    async def main() -> tuple[float, int]:
        lags: list[float] = []
        stop = False

        async def ticker() -> None:  # a 1 ms timer; how late does it fire?
            while not stop:
                t = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append(time.perf_counter() - t - 0.001)

        tick = asyncio.create_task(ticker())
        sent, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 1.0:  # 5,000 tasks/s in batches of 50 every 10 ms
            await app.send_many_async([noop.s(i) for i in range(50)])
            sent += 50
            await asyncio.sleep(max(0.0, t0 + sent / 5000 - time.perf_counter()))
        stop = True
        await tick
        lags.sort()
        return lags[int(len(lags) * 0.99)], sent

    p99_lag, sent = asyncio.run(main())
    assert sent >= 4500
    assert p99_lag < 0.005, f"event loop lag p99 {p99_lag * 1000:.2f} ms"
