"""An idle SQLite consumer sleeps on the write-ahead log (inotify) and wakes when any process commits."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import chute
from chute.brokers.sqlite import SQLiteBroker
from chute.brokers.sqlite import watch as sqlite_watch
from chute.brokers.sqlite.watch import WalWatch
from helpers import TESTS, env_for, idle_cpu_share, start_worker, stop, wait_for

pytestmark = [pytest.mark.timing, pytest.mark.timeout(60),  # wake-up latencies and CPU shares
              pytest.mark.skipif(sqlite_watch.LIBC is None, reason="inotify is Linux's")]

SEND_LATER = """
import sys, time, chute
time.sleep(float(sys.argv[2]))
app = chute.App(sys.argv[1])
app.task(name="apps.basic.add")(lambda a, b: a + b).delay(1, 2)
print(time.time(), flush=True)
app.close()
"""


def send_later(url: str, after: float) -> subprocess.Popen[str]:
    """Another process that enqueues one task `after` seconds from now and prints when it returned."""
    return subprocess.Popen([sys.executable, "-c", SEND_LATER, url, str(after)], env=env_for(url),
                            stdout=subprocess.PIPE, text=True)


def sent_at(proc: subprocess.Popen[str]) -> float:
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    return float(out.split()[-1])


def test_a_sleep_on_the_watch_ends_when_another_process_commits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/w.db"
    app = chute.App(url)
    broker = app.broker
    assert isinstance(broker, SQLiteBroker) and broker._watch.watching
    assert broker.fetch(["default"], 1, 30, 0) == []  # the log file exists while a connection is open
    quiet = time.monotonic()
    assert broker._watch.sleep(0.3) is False  # nothing written: the whole sleep
    assert time.monotonic() - quiet >= 0.29
    sender = send_later(url, 0.5)
    t0 = time.monotonic()
    while not broker._watch.sleep(10):  # the sender's own start-up reads do not count; its commit does
        assert time.monotonic() - t0 < 20
    woke = time.time()
    assert woke - sent_at(sender) < 0.5  # ended by the commit, not by the 10 s timeout
    assert [d.queue for d in broker.fetch(["default"], 10, 30, 1)] == ["default"]
    app.close()


@pytest.mark.parametrize("inotify", ["watching", "unavailable"])
def test_an_idle_fetch_takes_another_process_s_task_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              inotify: str) -> None:
    """Watching, a fetch long idle wakes on the commit; without inotify (the per-user instance limit
    reached) it falls back to polling every 25 ms. Either way the task is taken within 100 ms."""
    if inotify == "unavailable":
        class AtTheLimit:  # inotify_init1 failing with EMFILE, as at fs.inotify.max_user_instances
            @staticmethod
            def inotify_init1(flags: int) -> int:
                return -1
        monkeypatch.setattr(sqlite_watch, "LIBC", AtTheLimit())
    url = f"sqlite:///{tmp_path}/w.db"
    app = chute.App(url)
    broker = app.broker
    assert isinstance(broker, SQLiteBroker)
    assert broker.fetch(["default"], 1, 30, 0.3) == []  # idle for a while first
    lateness = []
    for _ in range(3):
        sender = send_later(url, 0.4)
        got = broker.fetch(["default"], 10, 30, 10)
        taken = time.time()
        assert len(got) == 1
        lateness.append(taken - sent_at(sender))
        broker.ack(got)
    assert broker._watch.watching is (inotify == "watching")
    assert max(lateness) < 0.1, lateness
    app.close()


def _fetch_in_child(url: str, out: multiprocessing.Queue[object]) -> None:
    broker = chute.App(url).broker
    got = broker.fetch(["default"], 10, 30, 10)
    out.put((time.time(), len(got), os.getpid()))


def test_a_forked_child_watches_with_its_own_instance(tmp_path: Path) -> None:
    """The parent's inotify descriptor is inherited by a fork; reading it would steal the parent's
    events, so the child makes its own, and both keep waking."""
    url = f"sqlite:///{tmp_path}/w.db"
    app = chute.App(url)
    broker = app.broker
    assert isinstance(broker, SQLiteBroker)
    broker.fetch(["default"], 1, 30, 0.1)  # the parent's instance exists before the fork
    parent_fd = broker._watch._fd
    out: multiprocessing.Queue[object] = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_fetch_in_child, args=(url, out))
    child.start()
    time.sleep(0.5)  # the child is asleep on its watch
    sender = send_later(url, 0.2)
    taken, n, pid = out.get(timeout=20)
    child.join(10)
    assert n == 1 and pid != os.getpid() and taken - sent_at(sender) < 0.1
    assert broker._watch._fd == parent_fd  # the parent's is untouched
    sender = send_later(url, 0.3)
    got = broker.fetch(["default"], 10, 30, 10)
    assert len(got) == 1 and time.time() - sent_at(sender) < 0.1
    app.close()


def test_a_log_file_removed_and_made_again_is_watched_anew(tmp_path: Path) -> None:
    wal = tmp_path / "x.db-wal"
    wal.write_bytes(b"")
    watch = WalWatch(str(wal))
    assert watch.sleep(0.05) is False  # watching the first file
    wal.unlink()
    assert watch.sleep(0.05) is False  # the removal is seen; the watch is dropped
    assert watch.sleep(0.05) is False  # no file: a plain sleep
    wal.write_bytes(b"")  # made again (a new inode)

    def write_soon() -> None:
        time.sleep(0.2)
        with wal.open("ab") as f:
            f.write(b"frame")
    watch.sleep(0.01)  # the new file is watched from here on
    writer = threading.Thread(target=write_soon)
    writer.start()
    t0 = time.monotonic()
    assert watch.sleep(5) is True
    assert time.monotonic() - t0 < 2
    writer.join()
    watch.close()


BUSY_PRODUCER = """
import sys, time, chute
app = chute.App(sys.argv[1])
busy = app.task(name="busy.tick", queue="busy")(lambda: None)
end = time.monotonic() + float(sys.argv[2])
n = 0
while time.monotonic() < end:
    busy.delay()
    n += 1
    time.sleep(0.0002)
print(n, flush=True)
"""


def test_an_idle_worker_beside_a_busy_queue_does_not_look_once_per_commit(tmp_path: Path) -> None:
    """Another queue's commits wake the watch for nothing; after a few of those the idle worker
    spaces its looks out to the 25 ms poll's rate. Measured: 1.4-1.6 % of a core beside ~2,300
    commits a second, where looking once per commit cost 21 %."""
    url = f"sqlite:///{tmp_path}/w.db"
    worker = start_worker(url, "apps.basic:app", "-q", "quiet")
    try:
        app = chute.App(url)
        wait_for(app.store.workers, timeout=20, what="worker up")
        seconds = 6.0
        producer = subprocess.Popen([sys.executable, "-c", BUSY_PRODUCER, url, str(seconds)], env=env_for(url),
                                    stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        share = idle_cpu_share(worker, seconds=4.0)
        out, _ = producer.communicate(timeout=30)
        rate = int(out) / seconds
        assert rate > 500, f"the busy producer made only {rate:.0f} commits a second"
        assert share < 0.05, f"an idle worker beside {rate:.0f} commits/s used {share:.1%} of a core"
        quiet = app.task(name="apps.basic.add", queue="quiet")(lambda a, b: a + b)
        assert quiet.delay(2, 3).get(timeout=10) == 5  # and it still takes its own queue's work
    finally:
        stop(worker)


GEVENT_GET = """
from gevent import monkey; monkey.patch_all()
import subprocess, sys, time
import gevent
import chute
from chute.integrations import gevent as chute_gevent
url = sys.argv[1]
app = chute.App(url)
add = app.task(name="apps.basic.add")(lambda a, b: a + b)
chute_gevent.offload(app)
assert not app.broker._target._watch.watching  # sleeps stay gevent's: no watch in a patched process
worker = subprocess.Popen([sys.executable, "-m", "chute", "worker", "apps.basic:app"])
try:
    print(sum(add.delay(i, i).get(timeout=20) for i in range(10)), flush=True)
finally:
    worker.terminate()
    worker.wait()
"""


def test_get_in_a_gevent_patched_process_waits_cooperatively(tmp_path: Path) -> None:
    """A gevent-patched process keeps its plain (patched) sleeps: no inotify wait on a threadpool
    thread, where the first version of the watch hung."""
    pytest.importorskip("gevent")
    url = f"sqlite:///{tmp_path}/g.db"
    out = subprocess.run([sys.executable, "-c", GEVENT_GET, url], env=env_for(url), cwd=str(TESTS),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["90"]


def test_a_due_time_already_past_is_no_sleep_and_no_error(tmp_path: Path) -> None:
    """fetch() passes the time to the next due lease or ETA; when another worker took that one back
    first, it is already past. Woken by a commit while noisy, that once reached time.sleep(<0) and
    crashed the worker (the poison test's workers in CI)."""
    wal = tmp_path / "x.db-wal"
    wal.write_bytes(b"")
    watch = WalWatch(str(wal))
    assert watch.sleep(0.01) is False  # watching from here on
    looks = sqlite_watch.IdleLooks()
    looks.misses = sqlite_watch.IdleLooks.NOISE + 3  # spacing applies
    looks.missed()
    with wal.open("ab") as f:
        f.write(b"frame")  # a commit is waiting: the watch returns at once
    t0 = time.monotonic()
    looks.sleep(watch, -0.5)
    looks.sleep(watch, 0.0)
    assert time.monotonic() - t0 < 0.1
    watch.close()
