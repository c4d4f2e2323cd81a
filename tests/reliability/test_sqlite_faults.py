"""Faults only the SQLite broker has: crash loops, a full disk, write contention, clocks and reboots
(short forms of the scenarios in benchmarks/chaos.py). Seeds are printed so a failure replays."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import chute
from helpers import env_for, sqlite_db, start_worker, stop, wait_for, worker_thread
from reliability.history import integrity, read_ledger, scale, seeded

pytestmark = [pytest.mark.slow, pytest.mark.timeout(scale(240, 3600))]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/broker.db"


# Each line goes out in one write (print() with PYTHONUNBUFFERED=1 writes its pieces one by one, and a
# SIGKILL between them left a line "E" with no id); the parent counts complete lines only.
CRASH_LOOP = """
import sys, chute
from chute.brokers.base import Outgoing
app = chute.App(sys.argv[1])
b = app.broker

def say(kind, mid):
    sys.stdout.write(f"{kind} {mid}\\n")
    sys.stdout.flush()

i = 0
while True:
    i += 1
    mid = f"{sys.argv[2]}-{i}"
    b.publish([Outgoing("default", mid, b"x")])
    say("E", mid)
    for d in b.fetch(["default"], 5, 30, 0):
        say("F", d.id)
        b.ack([d])
        say("A", d.id)
"""


def test_sqlite_crash_loop_keeps_integrity_and_every_commit(url: str, tmp_path: Path) -> None:
    rng = seeded()
    db = tmp_path / "broker.db"
    chute.App(url).close()
    enqueued: set[str] = set()
    acked: set[str] = set()
    in_doubt: set[str] = set()  # fetched, killed before "A" was printed: its ack may have committed
    for trial in range(scale(30, 1000)):
        with subprocess.Popen([sys.executable, "-c", CRASH_LOOP, url, str(trial)], stdout=subprocess.PIPE,
                              env=env_for(url)) as p:
            time.sleep(rng.uniform(0.15, 0.4))
            p.send_signal(signal.SIGKILL)
            assert p.stdout is not None
            fetched: set[str] = set()
            for line in p.stdout.read().decode().split("\n")[:-1]:  # what follows the last newline is torn
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
    print(f"{scale(30, 1000)} SIGKILLs, integrity ok after each; {len(enqueued)} enqueues committed, "
          f"{len(acked)} acked (0 came back), {len(in_doubt)} acks in doubt, {len(present)} left, 0 lost")


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


@pytest.mark.timing
def test_write_contention_many_producers_and_workers(url: str, ledger: Path) -> None:
    producers, workers, per_producer = scale((4, 4, 1000), (8, 8, 2000))
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
    print(f"{producers} producers x {per_producer} + {workers} workers: {len(ids)} enqueued and processed, "
          f"0 'database is locked'; enqueue latency p50 {lat[len(lat) // 2] * 1000:.2f} ms, "
          f"p99 {p99 * 1000:.2f} ms, max {lat[-1] * 1000:.2f} ms")
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


@pytest.mark.timing
def test_delays_of_two_hours_on_an_injected_clock_run_once_none_early_none_late(tmp_path: Path) -> None:
    """R3: 1,000 tasks due in 2 h (spread over 2 s), the broker's wall clock injected: nothing is
    delivered before it is due (held by nobody, longer than a lease), then each runs once, on time."""
    import chute as c

    rng = seeded()
    app = c.App(f"sqlite:///{tmp_path}/eta.db", lease=1)
    broker = app.broker
    shift = [0.0]
    broker._wall = lambda: time.time() + shift[0]  # type: ignore[attr-defined]
    ran: dict[str, list[float]] = {}

    @app.task
    def due() -> None:
        job = c.current_job()
        assert job is not None
        ran.setdefault(job.envelope.id, []).append(time.time() + shift[0])

    now = time.time()
    etas = {r.id: eta for r, eta in ((due.send(eta=eta), eta) for eta in
                                     (now + 7200 + rng.uniform(0, 2) for _ in range(1000)))}
    try:
        with worker_thread(app, concurrency=4):
            time.sleep(1.5)  # longer than the lease: a delivered-but-delayed design would show it now
            s = app.broker.stats(["default"])[0]
            assert not ran and (s.delayed, s.in_flight, s.ready) == (1000, 0, 0)
            shift[0] = 7200.0 - 0.5 - (time.time() - now)  # two hours pass: half a second before the first is due
            wait_for(lambda: len(ran) == 1000, timeout=30, what="every task, once due")
            time.sleep(1.5)
    finally:
        app.close()
    assert all(len(v) == 1 for v in ran.values())
    lateness = sorted(v[0] - etas[k] for k, v in ran.items())
    assert lateness[0] >= 0, f"ran {-lateness[0]:.3f} s early"
    assert lateness[-1] < 1.0, f"ran {lateness[-1]:.3f} s late (p50 {lateness[500]:.3f} s)"
