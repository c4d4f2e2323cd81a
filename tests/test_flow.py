"""Flow control: maximum queue lengths with a policy, and bounded prefetch sharing work fairly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import chute
from helpers import start_worker, stop, wait_for


def waiting(app: chute.App, queue: str = "q") -> int:
    s = app.broker.stats([queue])[0]
    return int(s.ready + s.delayed)


@pytest.mark.timing
def test_reject_policy_raises_queue_full_at_once_and_keeps_what_was_there(app: chute.App) -> None:
    app.queue("q", max_length=10)
    f = app.task(queue="q")(lambda i: i)
    for i in range(10):
        f.delay(i)
    t0 = time.perf_counter()
    with pytest.raises(chute.QueueFull, match="queue 'q' is full: 10 waiting, limit 10"):
        f.delay(10)
    assert time.perf_counter() - t0 < 0.01
    with pytest.raises(chute.QueueFull):
        app.send_many([f.s(11), f.s(12)])  # the whole batch, or nothing
    assert waiting(app) == 10


@pytest.mark.timing
def test_block_policy_waits_for_room_then_gives_up(app: chute.App) -> None:
    app.queue("q", max_length=2, on_full="block", block_timeout=0.5)
    f = app.task(queue="q")(lambda i: i)
    f.delay(1)
    f.delay(2)
    t0 = time.monotonic()
    with pytest.raises(chute.QueueFull):
        f.delay(3)
    assert 0.45 <= time.monotonic() - t0 < 1.0
    import threading

    def consume_one() -> None:
        time.sleep(0.2)
        app.broker.ack(app.broker.fetch(["q"], 1, 30, 0))

    consumer = threading.Thread(target=consume_one)
    consumer.start()
    t0 = time.monotonic()
    f.delay(3)  # returns as soon as a consumer made room
    assert 0.15 <= time.monotonic() - t0 < 0.5
    consumer.join()
    assert waiting(app) == 2


def test_drop_oldest_makes_room_and_counts(app: chute.App) -> None:
    app.queue("q", max_length=5, on_full="drop_oldest")
    f = app.task(queue="q")(lambda i: i)
    handles = [f.delay(i) for i in range(8)]
    assert waiting(app) == 5
    assert app.results.get_meta("chute.dropped:q") == "3"
    kept = [app.codec.decode(d.body).args[0] for d in app.broker.fetch(["q"], 10, 30, 0)]
    assert kept == [3, 4, 5, 6, 7]  # the oldest three were dropped
    assert handles[0].status is chute.State.UNKNOWN


def test_bad_queue_declarations() -> None:
    app = chute.App("memory://")
    with pytest.raises(chute.ConfigurationError, match="on_full='later'"):
        app.queue("q", max_length=1, on_full="later")
    with pytest.raises(chute.ConfigurationError, match="max_length must be a positive int"):
        app.queue("q", max_length=0)


@pytest.mark.timing
def test_a_fast_and_a_slow_worker_share_a_queue_by_speed(tmp_path: Path) -> None:
    url, log = f"sqlite:///{tmp_path}/fair.db", tmp_path / "ran.log"
    app = chute.App(url)
    work = app.task(name="apps.basic.sleep_then")(lambda seconds, value: None)
    app.send_many([work.s(0.01, i) for i in range(200)])
    fast = start_worker(url, "apps.basic:app", "-c", "2", "--prefetch", "2", CHUTE_TEST_LOG=str(log))
    slow = start_worker(url, "apps.basic:app", "-c", "1", "--prefetch", "1", CHUTE_TEST_LOG=str(log),
                        CHUTE_TEST_SLOW="0.2")
    try:
        wait_for(lambda: log.exists() and len(log.read_text().splitlines()) == 200, timeout=60, what="all done")
    finally:
        stop(fast)
        stop(slow)
    by_pid: dict[str, int] = {}
    for line in log.read_text().splitlines():
        pid = line.split()[1]
        by_pid[pid] = by_pid.get(pid, 0) + 1
    assert by_pid.get(str(fast.pid), 0) >= 170, by_pid  # the slow one could not hoard work


@pytest.mark.timing
def test_rate_limit_holds_across_two_worker_processes(tmp_path: Path) -> None:
    url, log = f"sqlite:///{tmp_path}/rate.db", tmp_path / "starts.log"
    app = chute.App(url)
    limited = app.task(name="apps.basic.limited")(lambda i: None)
    app.send_many([limited.s(i) for i in range(160)])
    workers = [start_worker(url, "apps.basic:app", "-c", "4", CHUTE_TEST_LOG=str(log)) for _ in range(2)]
    try:
        wait_for(lambda: log.exists() and len(log.read_text().splitlines()) == 160, timeout=60, what="all ran")
    finally:
        for w in workers:
            stop(w)
    rows = [line.split() for line in log.read_text().splitlines()]
    times = sorted(float(t) for t, _ in rows)
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 36 <= rate <= 44, f"{rate:.1f} starts/s against a limit of 40/s"
    assert len({pid for _, pid in rows}) == 2  # both processes took part


def test_bad_rate_limits_are_refused() -> None:
    app = chute.App("memory://")
    for bad in ("fast", "10/fortnight", "0/s", -1):
        with pytest.raises(chute.ConfigurationError, match="rate_limit"):
            app.task(rate_limit=bad)(lambda: None)
