"""A broker server SIGKILLed and started again mid-run, on every server broker: nothing lost.

One scenario, run against a server of the test's own (tests/servers.py: a redis-server with
`appendfsync always`, a RabbitMQ node), never the shared one: workers run through the outage and
reconnect; producers, sync and asyncio, get BrokerUnavailable at once while it is down, and their
event loop never blocks; every enqueue that returned before or after runs, delayed ones falling due
in the outage included. The long form (10,050 tasks) runs from benchmarks/chaos.py.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path

import pytest

from chute.errors import BrokerUnavailable
from conftest import results_url
from helpers import LoopThread, producer, ran, start_worker, stop, wait_for
from reliability.history import scale
from servers import RabbitNode, RedisServer

pytestmark = [pytest.mark.timing, pytest.mark.timeout(240)]
SEND = "apps.basic.sleep_then"


@pytest.fixture(params=["redis", "amqp"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer | RabbitNode]:
    controller = RedisServer(tmp_path) if request.param == "redis" else RabbitNode(tmp_path)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


async def outcome(call: Awaitable[object]) -> tuple[BaseException | None, float]:
    """What an awaited call raised (None if nothing), and the seconds it took."""
    t0 = time.monotonic()
    try:
        await call
    except Exception as exc:  # noqa: BLE001 - the caller judges it
        return exc, time.monotonic() - t0
    return None, time.monotonic() - t0


def test_a_server_restart_mid_run_loses_nothing_acknowledged(server: RedisServer | RabbitNode, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    results = results_url(server.name, tmp_path)
    if results is not None:  # RabbitMQ keeps no results: a file of the test's, shared with its workers
        monkeypatch.setenv("CHUTE_RESULTS_URL", results)
    log = tmp_path / "ran.log"
    app = producer(server.url)
    loop = LoopThread()
    workers: list[subprocess.Popen[bytes]] = []
    logs = [(tmp_path / f"worker{i}.log").open("wb") for i in range(2)]
    try:
        workers = [start_worker(server.url, "apps.basic:app", "-c", "4", stderr=f, CHUTE_TEST_LOG=str(log),
                                **server.worker_env) for f in logs]
        acked: list[int] = []
        for i in range(scale(600, 9_800)):  # with the 250 below, 10,050 in the long form (benchmarks/chaos.py)
            app.send_task(SEND, [0.01, i])
            acked.append(i)
        for i in range(50_000, 50_050):  # delayed ones fall due during the outage
            app.send_task(SEND, [0.0, i], countdown=1.5)
            acked.append(i)
        for i in range(60_000, 60_050):  # and from an event loop that lives through the outage
            loop.call(app.send_task_async(SEND, [0.0, i]))
            acked.append(i)
        wait_for(lambda: len(ran(log)) >= 50, timeout=30, what="work under way")
        server.kill()  # SIGKILL: only what the server made durable survives
        down_at = time.monotonic()
        loop.worst_lag = 0.0
        async_send = loop.submit(outcome(app.send_task_async(SEND, [0.0, -2])))  # an async producer, meanwhile
        with pytest.raises(BrokerUnavailable):
            app.send_task(SEND, [0.0, -1])
        assert time.monotonic() - down_at < 5
        error, took = async_send.result(30)
        assert isinstance(error, BrokerUnavailable) and took < 6, (error, took)
        assert loop.worst_lag < 0.05  # the failing publish waited without blocking the loop
        time.sleep(max(0.0, 3 - (time.monotonic() - down_at)))  # an outage of a few seconds, workers trying
        server.start()
        outage = time.monotonic() - down_at
        for i in range(70_000, 70_100):
            app.send_task(SEND, [0.0, i])
            acked.append(i)
        for i in range(80_000, 80_050):  # the same loop reconnects
            loop.call(app.send_task_async(SEND, [0.0, i]))
            acked.append(i)
        wait_for(lambda: set(acked) <= {v for v, _ in ran(log)}, timeout=scale(90, 400),
                 what="every acknowledged enqueue to run after the restart")
        for i in range(2):  # the other worker may have run the rest while this one was still backing off
            wait_for(lambda i=i: "reachable again" in (tmp_path / f"worker{i}.log").read_text(), timeout=30,
                     what=f"worker {i} to reconnect")
        assert all(w.poll() is None for w in workers)  # they reconnected rather than died
        runs = ran(log)
        print(f"{server.name}: {len(acked)} acknowledged enqueues across a SIGKILL and restart "
              f"(outage {outage:.1f} s): 0 lost, {len(runs) - len({v for v, _ in runs})} ran twice")
    finally:
        for w in workers:
            stop(w)
        for f in logs:
            f.close()
        loop.close(app)
        app.close()
    for i in range(2):  # at most about one error line a second while it was down, and word of the recovery
        lines = (tmp_path / f"worker{i}.log").read_text().splitlines()
        errors = [line for line in lines if " ERROR " in line]
        assert len(errors) <= outage + 2, f"{len(errors)} error lines in a {outage:.1f} s outage: {errors}"
        assert any("reachable again" in line for line in lines), lines

