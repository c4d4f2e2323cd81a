"""The operations API (chute.ops): the one read model behind the dashboard, its JSON API and the CLI."""

from __future__ import annotations

import threading

import pytest

import chute
from chute.ops import Ops
from chute.scheduler import Scheduler
from chute.worker import Worker
from helpers import wait_for, worker_thread

pytestmark = pytest.mark.brokers("memory", "sqlite", "redis")


def test_overview_counts_queues_and_the_last_hours_outcomes(app: chute.App) -> None:
    ok = app.task(name="ok")(lambda: 1)
    bad = app.task(name="bad", retries=1, retry_backoff=0.01)(lambda: 1 / 0)
    results = [ok.delay() for _ in range(3)] + [bad.delay()]
    ops = Ops(app)
    assert ops.overview().queues[0].ready == 4
    with worker_thread(app):
        wait_for(lambda: all(r.ready() for r in results), what="all finished")
    o = ops.overview()
    assert (o.succeeded_last_hour, o.failed_last_hour, o.retried_last_hour) == (3, 1, 1)
    assert o.failure_rate == 0.25 and len(o.rates) == 60 and o.rates[-1].succeeded + o.rates[-2].succeeded == 3
    assert o.queues[0].dead == 1 and o.broker == chute.brokers.redact_url(app.url)


def test_a_second_look_sees_what_happened_since_the_first(app: chute.App) -> None:
    """One Ops, asked twice within a moment: the second answer has the outcomes written in between."""
    ok = app.task(name="ok")(lambda: 1)
    ops = Ops(app)
    assert ops.overview().succeeded_last_hour == 0
    ok.delay()
    Worker(app).run(until_idle=True)
    assert ops.overview().succeeded_last_hour == 1


def test_running_tasks_are_listed_with_an_open_attempt(app: chute.App) -> None:
    gate = threading.Event()
    slow = app.task(name="slow")(lambda: gate.wait(10))
    r = slow.delay()
    ops = Ops(app)
    try:
        with worker_thread(app):
            wait_for(lambda: [t.id for t in ops.tasks("started")] == [r.id], what="listed as started")
            wait_for(lambda: (v := ops.task(r.id)) is not None and v.timeline and v.timeline[-1].outcome == "started",
                     what="an open attempt")
            wait_for(lambda: ops.workers(include_offline=False)[0].running == [r.id], what="the worker's running list")
            gate.set()
            r.get(timeout=10)
    finally:
        gate.set()
    view = ops.task(r.id)
    assert view is not None and view.state == "succeeded" and view.result is True
    assert [(a.attempt, a.outcome) for a in view.timeline] == [(0, "succeeded")]
    assert ops.workers()[0].state == "offline"


def test_dead_letters_filter_replay_and_purge_with_arguments_masked(app: chute.App) -> None:
    @app.task(name="pay", retries=0)
    def pay(order: str, password: str, token: str = "") -> None:
        raise ValueError(f"declined {order} password={password}")

    a, b = pay.delay("A", "pw-1", token="t-1"), pay.delay("B", "pw-2")
    with worker_thread(app):
        wait_for(lambda: a.status is chute.State.DEAD and b.status is chute.State.DEAD, what="dead")
    ops = Ops(app)
    found = ops.dead_letters(search="declined A")
    assert [d.id for d in found] == [a.id] and found[0].args == ["A", "***"] and found[0].kwargs == {"token": "***"}
    assert "pw-1" not in found[0].reason and ops.dead_letters(task="nope") == []
    detail = ops.dead_letter(a.id)
    assert detail is not None and detail.error is not None and "pw-1" not in detail.error.traceback
    with pytest.raises(chute.ConfigurationError):
        ops.replay()
    assert ops.replay([a.id]).count == 1 and ops.purge(everything=True).count == 1
    assert [t.id for t in ops.tasks("dead")] == []


def test_workflows_and_schedules(app: chute.App) -> None:
    add = app.task(name="add")(lambda x, y: x + y)
    app.periodic(every=3600, name="hourly")(lambda: None)
    flow = chute.chain(add.s(1, 2), add.s(3)).run(app)
    ops = Ops(app)
    assert ops.schedules().scheduler is None
    s = Scheduler(app, lease=5)
    t = threading.Thread(target=s.run, daemon=True)
    t.start()
    try:
        with worker_thread(app):
            assert flow.get(timeout=10) == 6
        wait_for(lambda: (sv := ops.schedules().scheduler) is not None and sv.active, what="an active scheduler")
    finally:
        s.stop()
        t.join(10)
    view = ops.schedules()
    assert view.scheduler is not None and view.scheduler.id == s.id and not view.scheduler.active  # it stopped
    assert [(p.name, p.every) for p in view.schedules] == [("hourly", 3600.0)]
    assert [w.id for w in ops.workflows()] == [flow.id]
    w = ops.workflow(flow.id)
    assert w is not None and w.state == "succeeded" and [st.after for st in w.steps] == [[], ["s.0"]]
    assert ops.workflow("nope") is None


def test_health_wants_the_broker_and_a_recent_heartbeat(app: chute.App) -> None:
    ops = Ops(app)
    assert ops.health().reasons == ["no worker is alive"]
    with worker_thread(app):
        wait_for(lambda: ops.health(5).healthy, what="healthy")
    unreachable = chute.App("redis://:secret-pw@127.0.0.1:1/0")
    try:
        h = Ops(unreachable).health()
        assert not h.healthy and not h.broker and h.reasons == ["broker unreachable"]
    finally:
        unreachable.close()


def test_the_core_and_the_cli_import_no_web_framework() -> None:
    import subprocess
    import sys

    code = ("import sys, chute, chute.ops, chute.ops.terminal, chute.cli; "
            "print(sorted(m for m in ('starlette', 'jinja2', 'prometheus_client', 'uvicorn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
