"""Fault injection on the SQLite broker, checked against an effects ledger (short forms of the
scenarios in benchmarks/chaos.py). Seeds are printed so a failure replays."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import chute
from chute import State
from helpers import env_for, sqlite_db, start_worker, stop, wait_for
from reliability.history import History, integrity, ledger_rows, read_ledger

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/broker.db"


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


def producer_app(url: str) -> tuple[chute.App, chute.Task[..., None]]:
    app = chute.App(url)
    work = app.task(name="apps.chaos.work")(lambda ms: None)
    return app, work


def seeded() -> random.Random:
    seed = int(os.environ.get("CHUTE_CHAOS_SEED", random.randrange(1 << 30)))
    print(f"seed {seed} (replay with CHUTE_CHAOS_SEED={seed})")
    return random.Random(seed)


def test_worker_sigkill_chaos_loses_nothing(url: str, ledger: Path, tmp_path: Path) -> None:
    rng = seeded()
    n, prefetch = 1500, 8
    app, work = producer_app(url)
    ids = {r.id for r in app.send_many([work.s(rng.uniform(5, 50)) for _ in range(n)])}
    extra = {"CHUTE_LEDGER": str(ledger), "CHUTE_TEST_LEASE": "2"}

    def spawn() -> subprocess.Popen[bytes]:
        return start_worker(url, "apps.chaos:app", "-c", "4", "--prefetch", str(prefetch), **extra)

    workers = [spawn() for _ in range(4)]
    kills = 0
    chaos_until = time.monotonic() + 4.0
    try:
        while time.monotonic() < chaos_until:  # a random worker SIGKILLed and replaced every 200 ms
            time.sleep(0.2)
            i = rng.randrange(len(workers))
            workers[i].send_signal(signal.SIGKILL)
            workers[i].wait()
            workers[i] = spawn()
            kills += 1
        wait_for(lambda: set(read_ledger(ledger)) >= ids, timeout=120, what="every task in the ledger")
    finally:
        for w in workers:
            stop(w)
    h = History(ids, read_ledger(ledger))
    assert h.lost == set() and h.unexpected == set()
    extra_runs = sum(k - 1 for k in h.duplicated.values())
    assert extra_runs <= kills * prefetch, (extra_runs, kills)
    assert integrity(tmp_path / "broker.db") == "ok"
    s = app.broker.stats(["default"])[0]
    assert (s.ready, s.in_flight, s.delayed, s.dead) == (0, 0, 0, 0)
    print(f"{kills} kills, {len(h.duplicated)} tasks ran twice ({extra_runs} extra runs)")


PRODUCER = """
import sys, chute
app = chute.App(sys.argv[1])
work = app.task(name="apps.chaos.work")(lambda ms: None)
while True:
    print(work.delay(0).id, flush=True)
"""


def test_producer_killed_mid_publish_loses_no_returned_enqueue(url: str, tmp_path: Path) -> None:
    rng = seeded()
    chute.App(url).close()  # create the schema first, as a deployed app would have
    returned: list[str] = []
    for _ in range(20):
        with subprocess.Popen([sys.executable, "-c", PRODUCER, url], stdout=subprocess.PIPE, env=env_for(url)) as p:
            assert p.stdout is not None
            for _ in range(rng.randrange(1, 300)):
                returned.append(p.stdout.readline().decode().strip())
            p.send_signal(signal.SIGKILL)
            returned += [line.strip() for line in p.stdout.read().decode().splitlines() if line.strip()]
    with sqlite_db(tmp_path / "broker.db") as c:
        stored = {r[0] for r in c.execute("SELECT id FROM chute_messages")}
    assert set(returned) <= stored, f"{len(set(returned) - stored)} returned enqueues missing"
    assert integrity(tmp_path / "broker.db") == "ok"


CRASH_LOOP = """
import sys, chute
from chute.brokers.base import Outgoing
app = chute.App(sys.argv[1])
b = app.broker
i = 0
while True:
    i += 1
    mid = f"{sys.argv[2]}-{i}"
    b.publish([Outgoing("default", mid, b"x")])
    print("E", mid, flush=True)
    for d in b.fetch(["default"], 5, 30, 0):
        print("F", d.id, flush=True)
        b.ack([d])
        print("A", d.id, flush=True)
"""


def test_sqlite_crash_loop_keeps_integrity_and_every_commit(url: str, tmp_path: Path) -> None:
    rng = seeded()
    db = tmp_path / "broker.db"
    chute.App(url).close()
    enqueued: set[str] = set()
    acked: set[str] = set()
    in_doubt: set[str] = set()  # fetched, killed before "A" was printed: its ack may have committed
    for trial in range(30):
        with subprocess.Popen([sys.executable, "-c", CRASH_LOOP, url, str(trial)], stdout=subprocess.PIPE,
                              env=env_for(url)) as p:
            time.sleep(rng.uniform(0.15, 0.4))
            p.send_signal(signal.SIGKILL)
            assert p.stdout is not None
            fetched: set[str] = set()
            for line in p.stdout.read().decode().splitlines():
                kind, _, mid = line.partition(" ")
                {"E": enqueued, "A": acked, "F": fetched}[kind].add(mid)
            in_doubt |= fetched - acked
            assert len(fetched - acked) <= 1
        assert integrity(db) == "ok"
    with sqlite_db(db) as c:
        present = {r[0] for r in c.execute("SELECT id FROM chute_messages")}
    assert acked and enqueued
    assert not acked & present, "an acknowledged message came back"
    assert enqueued - acked - in_doubt <= present, "a committed enqueue was lost"


def test_poison_task_that_kills_its_process_is_dead_lettered_after_three(url: str, ledger: Path) -> None:
    app = chute.App(url)
    poison = app.task(name="apps.chaos.kills_its_worker")(lambda: None)
    work = app.task(name="apps.chaos.work")(lambda ms: None)
    bad = poison.delay()
    good = {r.id for r in app.send_many([work.s(1) for _ in range(300)])}
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


def test_pickle_payloads_never_run(url: str, tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    app = chute.App(url)
    app.task(name="apps.chaos.work")(lambda ms: None)
    for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
        app.broker.publish([chute.brokers.Outgoing("default", f"pickle-{proto}", pickle.dumps(Exploit(), proto))])
    w = start_worker(url, "apps.chaos:app", CHUTE_LEDGER=str(tmp_path / "l.db"))
    try:
        wait_for(lambda: len(app.broker.dead_letters()) == pickle.HIGHEST_PROTOCOL - 1, timeout=20, what="DLQ")
    finally:
        stop(w)
    assert not marker.exists()
    assert all(d.reason.startswith("decode_error") for d in app.broker.dead_letters())


def test_disk_full_is_a_typed_error_and_recovers(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a 16 MiB tmpfs here: {made.stderr.decode().strip()}")
    try:
        app = chute.App(f"sqlite:///{mount}/full.db")
        work = app.task(name="apps.chaos.work")(lambda ms: None)
        ballast = mount / "ballast"
        ballast.write_bytes(b"\0" * (4 << 20))
        committed = 0
        t0 = time.monotonic()
        with pytest.raises(chute.StorageFull, match="nothing was written"):
            for _ in range(100_000):
                work.send(("x" * 1024,))  # type: ignore[arg-type]
                committed += 1
        assert time.monotonic() - t0 < 60 and committed > 1000
        assert integrity(mount / "full.db") == "ok"
        ballast.unlink()
        t1 = time.monotonic()
        wait_for(lambda: _try_send(work), timeout=5, what="enqueue after space returned")
        assert time.monotonic() - t1 < 5
        assert app.broker.stats(["default"])[0].ready == committed + 1
        app.close()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _try_send(task: chute.Task[..., None]) -> bool:
    try:
        task.send(("after",))  # type: ignore[arg-type]
        return True
    except chute.StorageFull:
        return False


CONTENDER = """
import json, sys, time, chute
app = chute.App(sys.argv[1])
work = app.task(name="apps.chaos.work")(lambda ms: None)
lat, ids = [], []
for i in range(int(sys.argv[2])):
    t = time.perf_counter()
    ids.append(work.delay(0).id)
    lat.append(time.perf_counter() - t)
print(json.dumps({"ids": ids, "lat": lat}))
"""


def test_write_contention_many_producers_and_workers(url: str, ledger: Path) -> None:
    producers, workers, per_producer = 4, 4, 1000
    chute.App(url).close()
    ws = [start_worker(url, "apps.chaos:app", "-c", "2", CHUTE_LEDGER=str(ledger)) for _ in range(workers)]
    try:
        procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, url, str(per_producer)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env_for(url)) for _ in range(producers)]
        import json

        outs = [p.communicate(timeout=180) for p in procs]
        assert all(p.returncode == 0 for p in procs), [e.decode()[-2000:] for _, e in outs]
        assert not any(b"locked" in e for _, e in outs)
        data = [json.loads(o) for o, _ in outs]
        ids = {i for d in data for i in d["ids"]}
        lat = sorted(x for d in data for x in d["lat"])
        assert len(ids) == producers * per_producer
        wait_for(lambda: set(read_ledger(ledger)) >= ids, timeout=120, what="all processed")
    finally:
        for w in ws:
            stop(w)
    p99 = lat[int(len(lat) * 0.99)]
    print(f"enqueue latency p50 {lat[len(lat) // 2] * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")
    assert p99 < 0.05


def test_wall_clock_jumps_neither_expire_leases_nor_run_delays_twice(tmp_path: Path) -> None:
    from chute.brokers.base import Outgoing
    from chute.brokers.sqlite import SQLiteBroker

    broker = chute.App(f"sqlite:///{tmp_path}/clock.db").broker
    assert isinstance(broker, SQLiteBroker)
    broker.publish([Outgoing("q", "held", b"1"), Outgoing("q", "later", b"2", eta=time.time() + 1800)])
    (held,) = broker.fetch(["q"], 10, 30, 0)
    shift = 0.0
    broker._wall = lambda: time.time() + shift
    shift = 3600.0  # the wall clock jumps an hour ahead
    got = broker.fetch(["q"], 10, 30, 0)
    assert [d.id for d in got] == ["later"]  # due by the new wall time; the lease did not expire
    assert broker.ack(got) == 1 and broker.ack([held]) == 1
    shift = -3600.0  # and an hour back: nothing comes again
    assert broker.fetch(["q"], 10, 30, 0) == []
    assert broker.stats(["q"])[0] == type(broker.stats(["q"])[0])("q")


def test_a_reboot_ends_every_lease(tmp_path: Path) -> None:
    from chute.brokers.base import Outgoing

    url = f"sqlite:///{tmp_path}/boot.db"
    app = chute.App(url)
    app.broker.publish([Outgoing("q", "m", b"x")])
    assert app.broker.fetch(["q"], 1, 3600, 0)
    app.close()
    with sqlite_db(tmp_path / "boot.db") as c:  # as if the database were opened after a reboot
        c.execute("UPDATE chute_meta SET value = 'monotonic:another-boot' WHERE key = 'lease_clock'")
    again = chute.App(url)
    assert [d.id for d in again.broker.fetch(["q"], 1, 30, 0)] == ["m"]
