"""Real worker and producer processes on the SQLite broker: kills, graceful drains, load."""

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
from helpers import declare_basic, env_for, idle_cpu_share, ran, sqlite_db, start_worker, stop, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.brokers("sqlite"), pytest.mark.timeout(180)]


@pytest.fixture
def app(app: chute.App) -> chute.App:
    """The suite's `app`, sending the tasks of tests/apps/basic.py to the test's worker processes."""
    return declare_basic(app)


def test_sigkill_mid_task_runs_again_on_another_worker_after_the_lease(
        app: chute.App, url: str, tmp_path: Path) -> None:
    log = tmp_path / "ran.log"
    first = start_worker(url, "apps.basic:app", "-c", "1", CHUTE_TEST_LEASE="2", CHUTE_TEST_LOG=str(log))
    try:
        r = app.send_task("apps.basic.sleep_then", [1.0, 42])
        wait_for(lambda: r.status is State.STARTED, what="task started")
        first.send_signal(signal.SIGKILL)
        first.wait(5)
        killed_at = time.monotonic()
        assert r.status is State.STARTED  # still leased by the dead worker
        second = start_worker(url, "apps.basic:app", "-c", "1", CHUTE_TEST_LEASE="2", CHUTE_TEST_LOG=str(log))
        try:
            assert r.get(timeout=20) == 42
            assert time.monotonic() - killed_at < 2 + 1.0 + 3  # lease + the run + start-up
            (value, pid), = ran(log)  # the killed run never finished; the second did, once
            assert (value, pid) == (42, second.pid)
        finally:
            assert stop(second) == 0
    finally:
        if first.poll() is None:
            first.kill()


def test_sigterm_drains_gracefully(app: chute.App, url: str, tmp_path: Path) -> None:
    log = tmp_path / "ran.log"
    results = app.send_many([chute.Signature("apps.basic.sleep_then", (0.5, i)) for i in range(40)])
    w = start_worker(url, "apps.basic:app", "-c", "4", "--prefetch", "16", "--grace", "10",
                     CHUTE_TEST_LOG=str(log))
    wait_for(lambda: len(ran(log)) >= 4, what="some tasks done")
    t0 = time.monotonic()
    assert stop(w, signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 3  # the running ones finish (0.5 s), the prefetched are released
    done = {v for v, _ in ran(log)}
    succeeded = {i for i, r in enumerate(results) if r.status is State.SUCCEEDED}
    assert done == succeeded  # every started task finished and recorded
    s = app.broker.stats(["default"])[0]
    assert s.in_flight == 0 and s.ready == 40 - len(done)  # the rest released at once, not leased
    w2 = start_worker(url, "apps.basic:app", "-c", "8", CHUTE_TEST_LOG=str(log))
    try:
        assert sorted(r.get(timeout=30) for r in results) == list(range(40))
    finally:
        stop(w2)
    values = [v for v, _ in ran(log)]
    assert sorted(values) == list(range(40))  # each ran exactly once


def test_second_sigterm_stops_at_once_and_releases(app: chute.App, url: str) -> None:
    r = app.send_task("apps.basic.sleep_then", [30, 1])
    w = start_worker(url, "apps.basic:app", "-c", "1", "--grace", "60")
    wait_for(lambda: r.status is State.STARTED, what="started")
    w.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    t0 = time.monotonic()
    assert stop(w, signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - t0 < 3
    assert app.broker.stats(["default"])[0].ready == 1  # released, not left to its lease


PRODUCER = """
import sys, chute
app = chute.App(sys.argv[1])
add = app.task(name="apps.basic.add")(lambda a, b: None)
ids = []
for i in range(int(sys.argv[2])):
    ids.append(add.delay(int(sys.argv[3]), i).id)
open(sys.argv[4], "w").write("\\n".join(ids))
"""


def test_two_workers_three_producers_ten_thousand_each(url: str, tmp_path: Path) -> None:
    n = 10_000
    workers = [start_worker(url, "apps.basic:app", "-c", "4") for _ in range(2)]
    try:
        producers = [subprocess.Popen([sys.executable, "-c", PRODUCER, url, str(n), str(p * 1_000_000),
                                       str(tmp_path / f"ids{p}")], env=env_for(url)) for p in range(3)]
        assert [p.wait(120) for p in producers] == [0, 0, 0]
        ids = [line for p in range(3) for line in (tmp_path / f"ids{p}").read_text().split()]
        assert len(ids) == len(set(ids)) == 3 * n
        db = tmp_path / "sqlite.db"  # the `url` fixture's file

        def finished() -> int:
            with sqlite_db(db) as c:
                return c.execute("SELECT count(*) FROM chute_results WHERE state = 'succeeded'").fetchone()[0]

        wait_for(lambda: finished() == 3 * n, timeout=120, what="all 30,000 results")
        with sqlite_db(db) as c:
            got = dict(c.execute("SELECT task_id, value FROM chute_results").fetchall())
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert set(got) == set(ids)
        expected = {p * 1_000_000 + i for p in range(3) for i in range(n)}
        assert {int(v) for v in got.values()} == expected  # each add(a, i) returned a + i, once
    finally:
        assert [stop(w) for w in workers] == [0, 0]


def test_supervisor_restarts_a_killed_worker_process(app: chute.App, url: str) -> None:
    sup = start_worker(url, "apps.basic:app", "-p", "2", "-c", "2")
    try:
        procs = wait_for(lambda: len(app.store.workers()) == 2 and app.store.workers(), what="2 workers")
        victim = procs[0].pid
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len({w.pid for w in app.store.workers()} - {victim}) == 2, timeout=20,
                 what="a replacement worker")
        assert app.send_task("apps.basic.add", [2, 2]).get(timeout=10) == 4
        live = {w.id for w in app.store.workers() if w.pid != victim}
    finally:
        assert stop(sup) == 0
    # the live children deregister; the SIGKILLed one's entry simply expires with its heartbeat
    wait_for(lambda: not live & {w.id for w in app.store.workers()}, timeout=10, what="children gone")


SIGTERM_DURING_A_RESTART = """
import os, signal, subprocess, sys, time
from chute.worker import supervisor

real_popen, calls = subprocess.Popen, []

def popen(cmd, **kw):
    calls.append(cmd)
    if len(calls) == 1:  # the first child dies at once, so the supervisor restarts it
        return real_popen([sys.executable, "-c", "raise SystemExit(1)"], **kw)
    os.kill(os.getpid(), signal.SIGTERM)  # the stop arrives while the replacement is being started
    calls.append(real_popen(cmd, **kw))
    return calls[-1]

supervisor.subprocess.Popen = popen
t = time.monotonic()
code = supervisor.supervise(sys.argv[1:], 1, 20.0)
print(code, f"{time.monotonic() - t:.2f}", calls[-1].returncode, flush=True)
"""


def test_a_stop_that_arrives_while_a_worker_is_restarted_reaches_the_new_worker(url: str) -> None:
    """Without it the new worker never heard of the stop, and the supervisor waited out the grace
    period plus 5 s for it, then killed it (R9's poison test saw it: a SIGTERM during a restart)."""
    proc = subprocess.run([sys.executable, "-c", SIGTERM_DURING_A_RESTART, "apps.basic:app", "--grace", "20",
                           "--log-level", "WARNING"], env=env_for(url), cwd=str(Path(__file__).parent),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and len(proc.stdout.split()) == 3, proc.stdout + proc.stderr
    code, seconds, child_exit = proc.stdout.split()
    # the new worker stopped on the SIGTERM (gracefully, or by its default action if it came before
    # the worker's handlers): not SIGKILLed at the deadline
    assert code == "0" and child_exit in ("0", str(-signal.SIGTERM)) and float(seconds) < 15, proc.stdout + proc.stderr


@pytest.mark.timing
@pytest.mark.brokers("sqlite", "redis", "amqp")
def test_an_idle_worker_uses_under_one_percent_of_a_core(url: str) -> None:
    """Idle, a worker sleeps in the broker: Redis and RabbitMQ block in the server, SQLite on the
    write-ahead log (inotify) instead of polling it."""
    w = start_worker(url, "apps.basic:app")
    try:
        if not Path(f"/proc/{w.pid}/stat").exists():
            pytest.skip("needs /proc")
        app = chute.App(url)
        wait_for(app.store.workers, timeout=20, what="worker up")
        time.sleep(1.0)
        share = idle_cpu_share(w, seconds=5.0)
        assert share < 0.01, f"idle worker used {share:.1%} of a core"
    finally:
        stop(w)


def test_a_task_blocked_outside_python_is_settled_and_its_process_replaced(tmp_path: Path) -> None:
    """Past its time limit a task is interrupted; one that cannot be (blocked in a C call) is settled as
    timed out TERMINATE_AFTER (5 s) later, and its supervised process is replaced by a fresh one."""
    url = f"sqlite:///{tmp_path}/b.db"
    app = chute.App(url)
    blocked = app.task(name="apps.basic.blocked")(lambda seconds: None)
    add = app.task(name="apps.basic.add")(lambda a, b: None)
    sup = start_worker(url, "apps.basic:app", "-p", "2", "-c", "2")
    try:
        r = blocked.delay(120)
        wait_for(lambda: r.status is State.STARTED, timeout=20, what="the blocked task to start")
        t0 = time.monotonic()
        with pytest.raises(chute.TimeLimitExceeded):
            r.get(timeout=30)
        assert time.monotonic() - t0 < 15
        assert r.status is State.DEAD  # retries=0: the dead-letter queue, with the reason
        assert [add.delay(i, i).get(timeout=20) for i in range(4)] == [0, 2, 4, 6]
        assert sup.poll() is None
    finally:
        stop(sup)


OPENER = """
import sys, time, chute
base, t0, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
for i in range(rounds):
    while time.time() < t0 + i * 0.1:
        pass
    try:
        chute.App(f"sqlite:///{base}/{i}.db").close()
    except Exception as exc:
        print(f"round {i}: {type(exc).__name__}: {exc}")
"""


def test_processes_creating_the_same_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """A worker and `chute send` started together on a new file: switching it to WAL takes a lock
    that ignores the busy timeout, so the loser used to get 'database is locked'."""
    t0, rounds = time.time() + 2.0, 30
    procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(tmp_path), repr(t0), str(rounds)],
                              stdout=subprocess.PIPE, text=True, env=env_for(f"sqlite:///{tmp_path}/x.db"))
             for _ in range(6)]
    errors = [line for p in procs for line in p.communicate(timeout=60)[0].splitlines()]
    assert all(p.returncode == 0 for p in procs)
    assert errors == []
    for i in range(rounds):
        with sqlite_db(tmp_path / f"{i}.db") as c:
            assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
