"""Tasks for the fault-injection suite: each run is written to an effects ledger (a separate
SQLite file named by CHUTE_LEDGER) as (task id, attempt, worker pid) before the task returns;
`work` also records its start, so runs cut short by a kill can be found."""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import chute

app = chute.App(lease=float(os.environ.get("CHUTE_TEST_LEASE", "2")),
                max_deliveries=int(os.environ.get("CHUTE_TEST_MAX_DELIVERIES", "3")))
_ledger = threading.local()  # one connection per executor thread: a connection is not for sharing


def ledger() -> sqlite3.Connection:
    conn: sqlite3.Connection | None = getattr(_ledger, "conn", None)
    if conn is None:
        conn = sqlite3.connect(os.environ["CHUTE_LEDGER"], timeout=0, isolation_level=None)
        create_ledger(conn)
        # A row must outlive a SIGKILL of this process, not a power cut: WAL with synchronous=NORMAL keeps
        # every commit through a process kill, without an fsync per row. With an fsync each, sixteen
        # writers queued on the ledger's lock, spinning in `write`, and the ledger cost the machine more
        # CPU than the broker under test.
        conn.execute("PRAGMA synchronous = NORMAL")
        _ledger.conn = conn
    return conn


def write(sql: str, row: tuple[object, ...]) -> None:
    """One ledger row, committed before the task goes on. Retried every 0.5 ms while another
    writer holds the lock: SQLite's own busy handler sleeps up to 100 ms a try, which under a dozen
    writers would make the ledger, not the broker, what delays the tasks."""
    deadline = time.monotonic() + 60
    while True:
        try:
            ledger().execute(sql, row)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.0005)


def create_ledger(conn: sqlite3.Connection) -> None:
    """WAL and the effects table, tolerating other processes doing the same at the same moment
    (switching the journal mode takes a lock that does not wait on the busy timeout)."""
    for attempt in range(1000):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS effects (task_id TEXT, attempt INTEGER, pid INTEGER, at REAL)")
            conn.execute("CREATE TABLE IF NOT EXISTS starts (task_id TEXT, pid INTEGER, at REAL, deliveries INTEGER)")
            return
        except sqlite3.OperationalError:
            if attempt == 999:
                raise
            time.sleep(0.01)


def record() -> None:
    job = chute.current_job()
    assert job is not None
    write("INSERT INTO effects VALUES (?, ?, ?, ?)", (job.envelope.id, job.envelope.attempt, os.getpid(), time.time()))


def record_start() -> None:
    job = chute.current_job()
    assert job is not None
    write("INSERT INTO starts VALUES (?, ?, ?, ?)",
          (job.envelope.id, os.getpid(), time.time(), job.delivery.deliveries))


@app.task
def work(ms: float) -> None:
    record_start()  # so a checker can see which runs a kill cut short, and when they ran again
    time.sleep(ms / 1000)
    record()


@app.task
def long_work(seconds: float) -> None:
    """Runs far longer than the lease: the worker's heartbeat must keep extending it."""
    record_start()
    time.sleep(seconds)
    record()


@app.task
def kills_its_worker() -> None:
    record()
    os._exit(1)


@app.task(retries=5, retry_backoff=0.2, retry_jitter=0.2)
def always_fails() -> None:
    record()
    raise RuntimeError("always")


def on_order(payload: int) -> None:
    record()  # the job's id is this group's copy of the event: "<event id>:<group>"


for _group in ("billing", "email", "audit"):
    app.subscriber("order.*", group=_group)(on_order)
