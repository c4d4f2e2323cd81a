"""Lifecycle events and structured task-outcome logs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import chute
from chute.events import EventBuffer, iter_events
from helpers import TESTS, env_for, stop, wait_for, worker_thread

pytestmark = pytest.mark.brokers("memory", "sqlite")


def test_workers_record_each_outcome_and_their_own_life(app: chute.App) -> None:
    ok = app.task(name="ok")(lambda: 1)
    bad = app.task(name="bad", retries=1, retry_backoff=0.01)(lambda: 1 / 0)
    r1, r2 = ok.delay(), bad.delay()
    with worker_thread(app) as w:
        r1.get(timeout=10)
        wait_for(lambda: r2.status is chute.State.DEAD, what="dead")
    events = list(iter_events(app.store.read_events(0, 1000)))
    kinds = [e.kind for e in events]
    assert kinds[0] == "worker-online" and kinds[-1] == "worker-offline"
    (done,) = [e for e in events if e.task_id == r1.id]
    assert done.kind == "succeeded" and done.name == "ok" and done.worker == w.id
    assert done.received <= done.started <= done.at
    failed = [(e.kind, e.attempt, e.error) for e in events if e.task_id == r2.id]
    assert failed == [("retried", 0, "ZeroDivisionError: division by zero"),
                      ("dead", 1, "ZeroDivisionError: division by zero")]


def test_events_can_be_paged_and_turned_off(app: chute.App) -> None:
    f = app.task(name="f")(lambda: None)
    with worker_thread(app):
        f.delay().get(timeout=10)
    batches = app.store.read_events(0, 1000)
    assert batches and app.store.read_events(batches[-1][0], 10) == []
    before = len(batches)
    with worker_thread(app, events=False):
        f.delay().get(timeout=10)
    assert len(app.store.read_events(0, 1000)) == before


def test_a_full_buffer_drops_the_oldest_events_instead_of_blocking() -> None:
    buf = EventBuffer("w", capacity=10)
    for i in range(25):
        buf.emit("succeeded", f"t{i}")
    assert buf.dropped == 15
    batch = buf.drain()
    assert batch is not None
    assert [e.task_id for e in iter_events([(1, batch)])] == [f"t{i}" for i in range(15, 25)]
    assert buf.drain() is None


def test_json_logs_have_one_line_per_task_outcome(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/logs.db"
    app = chute.App(url)
    add = app.task(name="apps.basic.add")(lambda a, b: None)
    fails = app.task(name="apps.basic.always_fails")(lambda reason: None)
    r, bad = add.delay(1, 2), fails.delay("nope")
    w = subprocess.Popen([sys.executable, "-m", "chute", "worker", "apps.basic:app", "--log-level", "INFO",
                          "--log-format", "json"], env=env_for(url), cwd=str(TESTS), stderr=subprocess.PIPE, text=True)
    try:
        r.get(timeout=20)
        wait_for(lambda: bad.status is chute.State.DEAD, timeout=20, what="dead")
    finally:
        stop(w)
        assert w.stderr is not None
        lines = [json.loads(line) for line in w.stderr.read().splitlines() if line.startswith("{")]
        w.stderr.close()
    tasks = [x for x in lines if x.get("task_id")]
    ok = next(x for x in tasks if x["task_id"] == r.id)
    assert ok["state"] == "succeeded" and ok["task"] == "apps.basic.add" and ok["queue"] == "default"
    assert ok["attempt"] == 0 and ok["duration_ms"] >= 0 and ok["logger"] == "chute.task"
    states = [x["state"] for x in tasks if x["task_id"] == bad.id]
    assert states == ["retrying", "retrying", "dead"]
    assert all("nope" in x["error"] for x in tasks if x["task_id"] == bad.id)


def test_a_long_task_is_announced_while_it_runs_and_failures_carry_their_duration(app: chute.App) -> None:
    import threading

    gate = threading.Event()
    slow = app.task(name="slow")(lambda: gate.wait(10))

    @app.task(name="bad", retries=0)
    def bad() -> None:
        if sum(range(20_000)):  # some work, so the attempt has a measurable duration
            raise ZeroDivisionError("division by zero")

    r, b = slow.delay(), bad.delay()
    try:
        with worker_thread(app):
            wait_for(lambda: any(e.kind == "started" and e.task_id == r.id
                                 for e in iter_events(app.store.read_events(0, 1000))), what="started event")
            gate.set()
            r.get(timeout=10)
            wait_for(lambda: b.status is chute.State.DEAD, what="dead")
    finally:
        gate.set()
    events = list(iter_events(app.store.read_events(0, 1000)))
    (started,) = [e for e in events if e.task_id == r.id and e.kind == "started"]
    (done,) = [e for e in events if e.task_id == r.id and e.kind == "succeeded"]
    assert done.received <= started.at <= done.at
    (dead,) = [e for e in events if e.task_id == b.id and e.kind == "dead"]
    assert dead.duration > 0 and dead.error.startswith("ZeroDivisionError")


def test_workflow_steps_are_evented_with_their_workflow(app: chute.App) -> None:
    add = app.task(name="add")(lambda a, b: a + b)
    flow = chute.chain(add.s(1, 2), add.s(3)).run(app)
    with worker_thread(app):
        assert flow.get(timeout=10) == 6
    steps = [e for e in iter_events(app.store.read_events(0, 1000)) if e.kind == "succeeded"]
    assert len(steps) == 2 and {e.workflow for e in steps} == {flow.id}
