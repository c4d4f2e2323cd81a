"""The awaitable producer API: enqueue and wait from asyncio code without blocking the loop.

Every broker: SQLite and memory go through a thread, Redis (redis.asyncio) and RabbitMQ (aio-pika) are native.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import chute
from chute import State
from chute.errors import QueueFull, TaskTimeout
from conftest import broker_url, results_url
from helpers import worker_thread


def test_delay_async_send_async_and_wait(app: chute.App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(retries=0)
    def boom() -> None:
        raise ValueError("no")

    async def main() -> tuple[list[int], str, State]:
        first = await add.delay_async(1, 2)
        second = await add.send_async((3, 4), priority=5, countdown=0.05)
        third = await app.send_task_async(add.name, (5, 5))
        many = await app.send_many_async([add.s(i, i) for i in range(10)])
        values = [await r.wait(timeout=10) for r in (first, second, third, *many)]
        failing = await boom.delay_async()
        with pytest.raises(ValueError, match="no") as err:
            await failing.wait(timeout=10)
        status = await first.status_async()
        await app.aclose()
        return values, str(err.value), status

    with worker_thread(app):
        values, error, status = asyncio.run(main())
    assert values == [3, 7, 10] + [2 * i for i in range(10)]
    assert error == "no" and status is State.SUCCEEDED


def test_concurrent_sends_are_grouped_yet_each_gets_its_own_outcome(app: chute.App) -> None:
    app.queue("tiny", max_length=3, on_full="reject")

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    async def main() -> tuple[list[Any], list[int]]:
        outcomes = await asyncio.gather(*(add.send_async((i, i), queue="tiny" if i % 2 else None)
                                          for i in range(12)), return_exceptions=True)
        values = [await r.wait(timeout=10) for r in outcomes[::2]]  # the even ones, on the default queue
        await app.aclose()
        return list(outcomes), values

    with worker_thread(app, queues=["default"]):  # "tiny" is left to fill up
        outcomes, values = asyncio.run(main())
    full = [o for o in outcomes if isinstance(o, QueueFull)]
    sent = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(full) == 3 and len(sent) == 9  # 6 odd sends to "tiny": 3 fit, 3 refused, alone
    assert len({r.id for r in sent}) == 9
    assert values == [2 * i for i in range(0, 12, 2)]


@pytest.mark.parametrize("overlap", [1, 4])
def test_grouped_round_trips_are_bounded_and_overlap_as_asked(overlap: int) -> None:
    """Concurrent sends share round trips of at most GROUP_LIMIT messages (a bigger single batch goes
    whole), with at most `overlap` in flight; a send that arrives as a flusher finishes is not stranded."""
    from chute.aio import GROUP_LIMIT, GroupPublisher
    from chute.brokers.base import Outgoing

    sizes: list[int] = []
    flying = peak = 0

    async def publish(outs: list[Outgoing]) -> list[str]:
        nonlocal flying, peak
        flying += 1
        peak = max(peak, flying)
        sizes.append(len(outs))
        await asyncio.sleep(0.002)
        flying -= 1
        return [o.id for o in outs]

    def batch(tag: str, n: int) -> list[Outgoing]:
        return [Outgoing("q", f"{tag}-{i}", b"") for i in range(n)]

    async def main() -> list[list[str]]:
        group = GroupPublisher(publish, overlap)
        calls = [batch(f"c{c}", 10) for c in range(40)] + [batch("big", GROUP_LIMIT + 36)]
        got = list(await asyncio.gather(*(group.publish(b) for b in calls)))
        for k in range(20):  # one after another: each finds the last flusher just leaving
            got.append(await group.publish(batch(f"s{k}", 1)))
        return got

    got = asyncio.run(main())
    assert got[:40] == [[f"c{c}-{i}" for i in range(10)] for c in range(40)]
    assert got[40] == [f"big-{i}" for i in range(GROUP_LIMIT + 36)]
    assert got[41:] == [[f"s{k}-0"] for k in range(20)]
    assert sorted(sizes)[-1] == GROUP_LIMIT + 36 and sorted(sizes)[-2] <= GROUP_LIMIT
    assert sum(sizes) == 400 + GROUP_LIMIT + 36 + 20
    assert peak == overlap


def test_wait_times_out_with_the_state(app: chute.App) -> None:
    @app.task
    def never(i: int) -> None:
        pass

    async def main() -> tuple[float, str]:
        r = await never.delay_async(1)  # no worker: it stays queued
        t = time.monotonic()
        with pytest.raises(TaskTimeout) as err:
            await r.wait(timeout=0.3)
        took = time.monotonic() - t
        await app.aclose()
        return took, str(err.value)

    took, message = asyncio.run(main())
    assert 0.25 <= took < 2.0
    assert "queued" in message


def test_async_calls_join_a_batch(app: chute.App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    async def main() -> list[State]:
        with app.batch():
            r = await add.delay_async(1, 1)
            assert r.status is State.UNKNOWN  # not sent until the batch ends
        states = [await r.status_async()]
        await app.aclose()
        return states

    assert asyncio.run(main()) == [State.QUEUED]


@pytest.mark.timing
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
        sends: list[asyncio.Task[Any]] = []
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 1.0:  # 5,000 tasks/s: a batch of 50 every 10 ms, as concurrent
            sends.append(asyncio.create_task(app.send_many_async([noop.s(i) for i in range(50)])))  # requests
            await asyncio.sleep(max(0.0, t0 + len(sends) * 50 / 5000 - time.perf_counter()))
        sent = sum(len(r) for r in await asyncio.gather(*sends))
        took = time.perf_counter() - t0
        stop = True
        await tick
        await app.aclose()
        lags.sort()
        return lags[int(len(lags) * 0.99)], int(sent / took)

    # best of up to 5: other processes on a shared machine can delay any run (CI saw RabbitMQ reach
    # 4,330/s), while a blocking call on the loop would show in every one. RabbitMQ: the server, on
    # the same 2 cores, spends ~60 % of one on 5,000 confirmed persistent messages a second, and the
    # loop's p99 measured 6-10 ms (docs/integrations/asyncio.md); a blocking call would be 10s of ms.
    bound = 0.010 if app.url.startswith("amqp") else 0.005
    runs = []
    for _ in range(5):
        runs.append(asyncio.run(main()))
        if runs[-1][0] < bound and runs[-1][1] >= 4500:
            break
    p99_lag, rate = min(runs, key=lambda r: (r[1] < 4500, r[0]))
    assert rate >= 4500, f"{rate} tasks/s"
    assert p99_lag < bound, f"event loop lag p99 {p99_lag * 1000:.2f} ms"


@pytest.mark.timing
def test_wait_does_not_poll_in_a_tight_loop(app: chute.App, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis sleeps in the server until the result is stored; the others back off to 50 ms."""
    reads: list[float] = []
    real_get = app.results.get

    def counting_get(task_id: str) -> Any:
        reads.append(time.monotonic())
        return real_get(task_id)

    monkeypatch.setattr(app.results, "get", counting_get)

    @app.task
    def slow() -> str:
        time.sleep(1.0)
        return "done"

    async def main() -> tuple[str, float]:
        r = await slow.delay_async()
        t = time.monotonic()
        value = await r.wait(timeout=10)
        took = time.monotonic() - t
        await app.aclose()
        return value, took

    with worker_thread(app):
        reads.clear()  # the worker's own reads are not the waiter's... but it makes none for this task
        value, took = asyncio.run(main())
    assert value == "done"
    if app.url.startswith("redis"):
        assert reads == [] and took < 1.5  # woken by the notification, not by reading
    else:
        assert len(reads) <= 35, f"{len(reads)} reads in about a second"


@pytest.mark.brokers("redis", "amqp")
def test_async_publish_keeps_the_sync_semantics(kind: str, tmp_path: Path) -> None:
    """The native asyncio sides (redis.asyncio, aio-pika) send what the sync broker sends: idempotency,
    ETAs, limits and events behave the same."""
    with broker_url(kind, tmp_path) as url:
        app = chute.App(url, results=results_url(kind, tmp_path))
        app.queue("small", max_length=2, on_full="reject")
        app.queue("waits", max_length=1, on_full="block", block_timeout=0.2)

        @app.task
        def add(a: int, b: int) -> int:
            return a + b

        @app.subscriber("order.*", group="billing")
        def bill(payload: dict[str, int]) -> int:
            return payload["n"]

        app.declare_subscribers()
        received: list[int] = []

        @app.subscriber("order.*", group="audit")
        def audit(payload: dict[str, int]) -> None:
            received.append(payload["n"])

        async def main() -> dict[str, Any]:
            out: dict[str, Any] = {}
            a = await add.send_async((1, 2), idempotency_key="k1")
            b = await add.send_async((1, 2), idempotency_key="k1")
            out["same_id"] = a.id == b.id
            late = await add.send_async((2, 2), countdown=2)  # still waiting when asked, on a loaded machine too
            out["late"] = await late.status_async()
            await add.send_async((0, 0), queue="small")
            await add.send_async((0, 0), queue="small")
            with pytest.raises(QueueFull):
                await add.send_async((0, 0), queue="small")
            await add.send_async((0, 0), queue="waits")
            t = time.monotonic()
            with pytest.raises(QueueFull):
                await add.send_async((0, 0), queue="waits")
            out["blocked"] = time.monotonic() - t
            event = await app.publish_async("order.created", {"n": 7})
            out["event"] = event
            out["values"] = [await a.wait(timeout=10), await late.wait(timeout=10)]
            out["billing"] = await app.result(f"{event}:billing").wait(timeout=10)
            await app.aclose()
            return out

        with worker_thread(app, queues=["default", "chute.group.billing"]):
            out = asyncio.run(main())
        app.close()
    assert out["same_id"] and out["late"] is State.QUEUED
    assert 0.15 <= out["blocked"] < 2
    assert out["values"] == [3, 4] and out["billing"] == 7
    assert received == []  # "audit" was declared after the event: it never saw it


@pytest.mark.brokers("redis", "amqp")
def test_each_event_loop_gets_and_closes_its_own_client(kind: str, tmp_path: Path) -> None:
    """Two asyncio.run() calls on one App: no connection outlives its loop (warnings are errors here)."""
    with broker_url(kind, tmp_path) as url:
        app = chute.App(url, results=results_url(kind, tmp_path))

        @app.task
        def noop() -> None:
            pass

        async def main() -> str:
            return (await noop.delay_async()).id  # no aclose(): the loop's shutdown closes the client

        ids = [asyncio.run(main()), asyncio.run(main())]
        assert len(set(ids)) == 2
        assert all(app.result(i).status is State.QUEUED for i in ids)
        app.close()
