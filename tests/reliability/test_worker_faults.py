"""Worker and producer faults on every durable broker, checked against an effects ledger (short
forms of the scenarios in benchmarks/chaos.py). Seeds are printed so a failure replays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import chute
from chute import State
from helpers import env_for, sqlite_db, start_worker, stop, wait_for
from reliability.history import (
    History,
    integrity,
    kill_while_running,
    ledger_rows,
    orphan_delays,
    producer_app,
    read_ledger,
    scale,
    seeded,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(scale(240, 3600))]


def counts(app: chute.App) -> tuple[int, int, int]:
    s = app.broker.stats(["default"])[0]
    return s.ready, s.in_flight, s.delayed


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


@pytest.mark.timing  # kills every 200 ms and a bound on how soon a killed run starts again
def test_worker_sigkill_chaos_loses_nothing(url: str, ledger: Path, tmp_path: Path) -> None:
    """R1, short form: 4 workers, one SIGKILLed and replaced every 200 ms."""
    rng = seeded()
    n, prefetch = scale(1500, 10_000), 8
    app, work = producer_app(url)
    ids = {r.id for r in app.send_many([work.s(rng.uniform(5, 50)) for _ in range(n)])}
    # Workers here live ~0.8 s: a healthy task's holders are killed three times in a row often enough
    # (6 of 10,000 in the long form) for poison detection, which R9 tests, to take it for poison.
    # This scenario is about loss, so it allows 20 crashes a task.
    extra = {"CHUTE_LEDGER": str(ledger), "CHUTE_TEST_LEASE": "2", "CHUTE_TEST_MAX_DELIVERIES": "20"}

    def spawn() -> subprocess.Popen[bytes]:
        return start_worker(url, "apps.chaos:app", "-c", "4", "--prefetch", str(prefetch), **extra)

    h, killed = kill_while_running(spawn, ids, ledger, rng)
    kills = len(killed)
    assert h.lost == set() and h.unexpected == set()
    extra_runs = sum(k - 1 for k in h.duplicated.values())
    assert extra_runs <= kills * prefetch, (extra_runs, kills)
    # Runs a kill cut short start again when their lease (2 s) ends. Mid-chaos a redelivered message may
    # be claimed by a worker that is killed in turn before starting it (workers live ~0.8 s here), which
    # costs it another lease; the runs cut short by the last kill, after which nobody dies, show the
    # bound alone.
    by_kill = orphan_delays(ledger, killed)
    delays = sorted(d for ds in by_kill.values() for d in ds)
    last = by_kill[max(killed, key=killed.__getitem__)]
    assert delays and delays[len(delays) // 2] < 2.0 + 0.5, delays
    assert all(d < 2.0 + 1.0 for d in last), last
    if url.startswith("sqlite"):
        assert integrity(sqlite_path(url)) == "ok"
    # What the last kills left (runs that finished but were not acknowledged come back; RabbitMQ
    # counts what dead workers last reported holding until their records expire): a fresh worker
    # drains it, and nothing stays behind.
    w = spawn()
    try:
        wait_for(lambda: counts(app) == (0, 0, 0), timeout=60, what="an empty queue")
    finally:
        stop(w)
    dead = app.broker.dead_letters("default")
    assert dead == [], [(d.id, d.reason) for d in dead]
    print(f"{kills} kills, {len(h.duplicated)} tasks ran twice "
          f"({extra_runs} extra runs); {len(delays)} runs cut short, started again "
          f"{delays[len(delays) // 2]:.2f} s (median), {delays[-1]:.2f} s (max) after the kill; "
          f"after the last kill {max(last, default=0):.2f} s (lease 2 s)")


PRODUCER = """
import sys, chute
app = chute.App(sys.argv[1])
work = app.task(name="apps.chaos.work")(lambda ms: None)
while True:
    print(work.delay(0).id, flush=True)
"""


def test_producer_killed_mid_publish_loses_no_returned_enqueue(url: str, ledger: Path) -> None:
    """R4, short form: 20 producers SIGKILLed at random points."""
    rng = seeded()
    chute.App(url).close()  # create the schema first, as a deployed app would have
    returned: list[str] = []
    for _ in range(scale(20, 100)):
        with subprocess.Popen([sys.executable, "-c", PRODUCER, url], stdout=subprocess.PIPE, env=env_for(url)) as p:
            assert p.stdout is not None
            for _ in range(rng.randrange(1, 300)):
                returned.append(p.stdout.readline().decode().strip())
            p.send_signal(signal.SIGKILL)
            returned += [line.strip() for line in p.stdout.read().decode().splitlines() if line.strip()]
    w = start_worker(url, "apps.chaos:app", "-c", "4", CHUTE_LEDGER=str(ledger))
    try:  # every enqueue that returned was stored: a worker finds and runs each one
        wait_for(lambda: set(read_ledger(ledger)) >= set(returned), timeout=60, what="every returned enqueue")
    finally:
        stop(w)
    if url.startswith("sqlite"):
        assert integrity(sqlite_path(url)) == "ok"
    h = History(set(returned), read_ledger(ledger))
    print(f"{scale(20, 100)} producers killed: {len(h.enqueued)} enqueues returned, {len(h.lost)} lost; "
          f"{len(h.unexpected)} more stored whose return the kill cut off; {len(h.duplicated)} ran twice")


def test_poison_task_that_kills_its_process_is_dead_lettered_after_three(url: str, ledger: Path) -> None:
    app = chute.App(url)
    poison = app.task(name="apps.chaos.kills_its_worker")(lambda: None)
    work = app.task(name="apps.chaos.work")(lambda ms: None)
    bad = poison.delay()
    good = {r.id for r in app.send_many([work.s(1) for _ in range(scale(300, 1000))])}
    sup = start_worker(url, "apps.chaos:app", "-p", "2", "-c", "4", "--prefetch", "8",
                       CHUTE_LEDGER=str(ledger), CHUTE_TEST_LEASE="1")
    try:
        wait_for(lambda: bad.status is State.DEAD, timeout=90, what="poison dead-lettered")
        wait_for(lambda: set(read_ledger(ledger)) >= good, timeout=60, what="the others")
    finally:
        stop(sup)
    assert read_ledger(ledger)[bad.id] == 3  # delivered three times, then no more
    (dead,) = app.broker.dead_letters()
    assert dead.id == bad.id and dead.reason.startswith("worker_lost")
    print(f"poison ran {read_ledger(ledger)[bad.id]} times, then dead-lettered {dead.reason!r}; "
          f"{len(good)} others all ran")


@pytest.mark.timing  # each retry's delay within its backoff ± jitter
def test_always_failing_task_makes_six_attempts_on_the_backoff_then_dlq(url: str, ledger: Path) -> None:
    app = chute.App(url)
    failing = app.task(name="apps.chaos.always_fails")(lambda: None)
    r = failing.delay()
    w = start_worker(url, "apps.chaos:app", CHUTE_LEDGER=str(ledger))
    try:
        wait_for(lambda: r.status is State.DEAD, timeout=30, what="DEAD after retries")
        rows = ledger_rows(ledger)
        assert [a for _, a, _, _ in rows] == [0, 1, 2, 3, 4, 5]
        gaps = [b[3] - a[3] for a, b in zip(rows, rows[1:], strict=False)]
        for n, gap in enumerate(gaps):  # 0.2 s × 2^n ± 20 %, plus the worker's pick-up slack
            assert 0.2 * 2**n * 0.8 - 0.02 <= gap <= 0.2 * 2**n * 1.2 + 0.1, (n, gaps)
        rec = r.info()
        assert rec is not None and rec.error is not None and "RuntimeError: always" in rec.error.traceback
        assert app.broker.replay() == 1
        wait_for(lambda: len(ledger_rows(ledger)) == 7 and r.status is State.DEAD, timeout=20, what="replay")
    finally:
        stop(w)


def test_pickle_payloads_never_run(url: str, ledger: Path, tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    app = chute.App(url)
    app.task(name="apps.chaos.work")(lambda ms: None)
    for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
        app.broker.publish([chute.brokers.Outgoing("default", f"pickle-{proto}", pickle.dumps(Exploit(), proto))])
    w = start_worker(url, "apps.chaos:app", CHUTE_LEDGER=str(ledger))
    try:
        wait_for(lambda: len(app.broker.dead_letters()) == pickle.HIGHEST_PROTOCOL - 1, timeout=20, what="DLQ")
    finally:
        stop(w)
    assert not marker.exists()
    assert all(d.reason.startswith("decode_error") for d in app.broker.dead_letters())


@pytest.mark.timing
def test_delays_longer_than_the_lease_run_once_on_time(url: str, ledger: Path) -> None:
    """R3, real-clock form: 1,000 tasks due 3-8 s out, three to eight times the 1 s lease, on two workers.

    A delayed message is held by nobody until due (Celery's ETA-in-the-worker runs such tasks once
    per visibility timeout, celery/kombu#337), so each runs once, none early, none over 1 s late.
    The two-hour form on an injected clock is SQLite's test_wall_clock_jumps_… in test_sqlite_faults.
    """
    rng = seeded()
    app, work = producer_app(url)
    now = time.time()
    due = {}
    for _ in range(10):
        etas = [now + rng.uniform(3, 8) for _ in range(100)]  # 200 fall due a second: lateness, not a backlog
        for r, eta in zip(app.send_many([work.s(0).set(eta=eta) for eta in etas]), etas, strict=True):
            due[r.id] = eta
    workers = [start_worker(url, "apps.chaos:app", "-c", "4", CHUTE_LEDGER=str(ledger), CHUTE_TEST_LEASE="1")
               for _ in range(2)]
    try:
        assert app.broker.stats(["default"])[0].delayed == 1000
        wait_for(lambda: set(read_ledger(ledger)) >= set(due), timeout=60, what="every delayed task")
        time.sleep(1.5)  # longer than a lease: a second run would show now
    finally:
        for w in workers:
            stop(w)
    rows = ledger_rows(ledger)
    assert len(rows) == 1000 and {r[0] for r in rows} == set(due)
    early = [(tid, at - due[tid]) for tid, _, _, at in rows if at < due[tid]]
    late = sorted(at - due[tid] for tid, _, _, at in rows)
    assert not early, early[:5]
    # On RabbitMQ a delay travels the delay chain (a dead-lettering hop per set bit of its delay in
    # 10 ms units, 2-8 here): the slowest of the three here (docs/brokers/rabbitmq.md, "Delays under load").
    assert late[-1] < 1.0, f"latest start {late[-1]:.3f} s after its ETA (p50 {late[500]:.3f} s)"
    print(f"lateness p50 {late[500] * 1000:.0f} ms, max {late[-1] * 1000:.0f} ms")


def test_every_group_sees_every_event_through_consumer_kills(url: str, ledger: Path) -> None:
    """R15, pub/sub part: events to a topic with three groups while consumers are SIGKILLed."""
    rng = seeded()
    n, prefetch = scale(1500, 10_000), 8
    app = chute.App(url)
    for group in ("billing", "email", "audit"):  # the producer's view of tests/apps/chaos.py
        app.subscriber("order.*", group=group)(lambda payload: None)
    app.declare_subscribers()
    events: list[str] = []
    for start in range(0, n, 250):
        with app.batch():
            events += [app.publish("order.created", i) for i in range(start, min(n, start + 250))]
    expected = {f"{e}:{g}" for e in events for g in ("billing", "email", "audit")}

    def spawn() -> subprocess.Popen[bytes]:
        return start_worker(url, "apps.chaos:app", "-c", "4", "--prefetch", str(prefetch),
                            CHUTE_LEDGER=str(ledger), CHUTE_TEST_LEASE="2", CHUTE_TEST_MAX_DELIVERIES="20")  # as in R1

    h, killed = kill_while_running(spawn, expected, ledger, rng)
    kills = len(killed)
    assert h.lost == set() and h.unexpected == set()
    extra_runs = sum(k - 1 for k in h.duplicated.values())
    assert extra_runs <= kills * prefetch, (extra_runs, kills)
    print(f"{n} events x 3 groups, {kills} kills: 0 lost, {extra_runs} extra runs")


def test_tasks_six_times_longer_than_the_lease_run_once(url: str, ledger: Path) -> None:
    """R2: a 1 s lease, tasks of 6 s on two workers: the heartbeat extends each lease, so no task is
    handed to anyone else (Celery's fixed visibility timeout runs such tasks twice, celery/celery#5935)."""
    app = chute.App(url)
    long_work = app.task(name="apps.chaos.long_work")(lambda seconds: None)
    ids = {r.id for r in app.send_many([long_work.s(6.0) for _ in range(8)])}
    workers = [start_worker(url, "apps.chaos:app", "-c", "4", CHUTE_LEDGER=str(ledger), CHUTE_TEST_LEASE="1")
               for _ in range(2)]
    try:
        wait_for(lambda: set(read_ledger(ledger)) >= ids, timeout=60, what="every long task")
    finally:
        for w in workers:
            stop(w)
    with sqlite_db(ledger) as c:
        starts = list(c.execute("SELECT task_id, deliveries FROM starts"))
    assert sorted(t for t, _ in starts) == sorted(ids)  # each started once
    assert {d for _, d in starts} == {1}  # and was delivered once
    assert all(n == 1 for n in read_ledger(ledger).values())
