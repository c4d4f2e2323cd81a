"""Workflows: chain, group, chord, DAG; state per step; failure, cancellation, bad input; fan-in."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import chute
from chute import DAG, State, chain, chord, group
from helpers import start_worker, stop, wait_for, worker_thread


@pytest.fixture
def app(app: chute.App) -> chute.App:
    """The suite's `app`, with this module's tasks."""

    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="total")
    def total(values: list[int]) -> int:
        return sum(values)

    @app.task(name="boom", retries=0)
    def boom(x: object) -> None:
        raise ValueError("step failed")

    @app.task(name="record")
    def record(tag: str) -> str:
        return tag

    return app


def s(app: chute.App, name: str, *args: object) -> chute.Signature:
    return app.tasks[name].s(*args)


def test_chain_feeds_each_result_to_the_next(app: chute.App) -> None:
    wf = chain(s(app, "add", 1, 2), s(app, "mul", 10), s(app, "add", 5)).run(app)
    with worker_thread(app):
        assert wf.get(timeout=10) == (1 + 2) * 10 + 5
    assert wf.status is State.SUCCEEDED
    assert set(wf.steps().values()) == {State.SUCCEEDED}
    assert app.workflow(wf.id).get(timeout=1) == 35


def test_a_workflow_started_in_a_batch_is_sent_with_it_or_not_at_all(app: chute.App) -> None:
    # its first steps were published at once, outside the batch, even when the batch then failed
    def waiting() -> int:
        return sum(st.ready + st.delayed for st in app.broker.stats())

    with pytest.raises(RuntimeError), app.batch():
        chain(s(app, "add", 1, 2), s(app, "mul", 10)).run(app)
        raise RuntimeError("the request failed")
    assert waiting() == 0
    with app.batch():
        wf = chain(s(app, "add", 1, 2), s(app, "mul", 10)).run(app)
        assert waiting() == 0
    assert waiting() == 1
    with worker_thread(app):
        assert wf.get(timeout=10) == 30


def test_group_and_chain_take_any_iterable_as_celery_users_write_them(app: chute.App) -> None:
    # group(t.s(i) for i in ...) failed with AttributeError: 'generator' object has no attribute 'task'
    wf = group(s(app, "add", i, i) for i in range(4)).run(app)
    steps = chain([s(app, "add", 1, 2), s(app, "mul", 10)]).run(app)
    with worker_thread(app):
        assert wf.get(timeout=10) == [0, 2, 4, 6]
        assert steps.get(timeout=10) == 30


def test_what_is_not_a_step_and_delay_on_a_canvas_are_refused_saying_what_to_write(app: chute.App) -> None:
    with pytest.raises(TypeError, match=r"not int: write group\(t.s\(i\) for i in"):
        group(s(app, "add", 1, 1), 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"started with .run\(app\)"):
        group(s(app, "add", 1, 1)).delay()
    assert sum(st.ready for st in app.broker.stats()) == 0  # nothing was sent


def test_pipe_composes_chains_and_chords(app: chute.App) -> None:
    wf = (s(app, "add", 1, 1) | s(app, "mul", 3)).run(app)
    fan = (group(*[s(app, "mul", i, i) for i in range(5)]) | s(app, "total")).run(app)
    with worker_thread(app):
        assert wf.get(timeout=10) == 6
        assert fan.get(timeout=10) == sum(i * i for i in range(5))


def test_group_results_in_order(app: chute.App) -> None:
    wf = group(*[s(app, "add", i, 100) for i in range(10)]).run(app)
    with worker_thread(app):
        assert wf.get(timeout=10) == [i + 100 for i in range(10)]


def test_chord_callback_gets_all_results(app: chute.App) -> None:
    wf = chord([s(app, "mul", i, 2) for i in range(20)], s(app, "total")).run(app)
    with worker_thread(app, concurrency=4):
        assert wf.get(timeout=10) == sum(i * 2 for i in range(20))


def test_dag_runs_steps_after_their_dependencies_and_shows_each_state(app: chute.App) -> None:
    dag = (DAG("order")
           .step("validate", s(app, "record", "validate"))
           .step("charge", s(app, "record", "charge"), after=["validate"])
           .step("email", s(app, "record", "email"), after=["charge"])
           .step("invoice", s(app, "record", "invoice"), after=["charge"])
           .step("ship", s(app, "record", "ship"), after=["charge"])
           .step("close", s(app, "record", "close"), after=["email", "invoice", "ship"]))
    wf = dag.run(app)
    states = wf.steps()
    assert states["validate"] is State.QUEUED and wf.status is State.QUEUED
    with worker_thread(app):
        assert wf.get(timeout=10) == "close"
    assert wf.steps() == {n: State.SUCCEEDED for n in ("validate", "charge", "email", "invoice", "ship", "close")}
    assert wf.step_result("charge") == "charge"


def test_a_failed_step_fails_the_workflow_and_nothing_after_it_runs(app: chute.App) -> None:
    wf = chain(s(app, "add", 1, 1), s(app, "boom"), s(app, "record", "never")).run(app)
    with worker_thread(app):
        wait_for(lambda: wf.status is State.FAILED, what="workflow failed")
        time.sleep(0.2)
    states = list(wf.steps().values())
    assert states[0] is State.SUCCEEDED and states[1] is State.DEAD and states[2] is State.UNKNOWN


def test_a_cancelled_workflow_runs_no_further_steps(app: chute.App) -> None:
    wf = chain(s(app, "add", 1, 1), s(app, "add", 1), s(app, "add", 1)).run(app)
    wf.cancel()
    with worker_thread(app):
        time.sleep(0.5)
    assert wf.status is State.CANCELLED
    assert all(x is State.CANCELLED for x in wf.steps().values())


def test_bad_dags_are_rejected_when_built_naming_the_steps(app: chute.App) -> None:
    cyclic = DAG("loop").step("a", s(app, "record", "a"), after=["c"]).step("b", s(app, "record", "b"), after=["a"])
    cyclic.step("c", s(app, "record", "c"), after=["b"])
    with pytest.raises(chute.ConfigurationError, match="DAG 'loop' has a cycle: a -> c -> b -> a"):
        cyclic.run(app)
    dangling = DAG("d").step("a", s(app, "record", "a"), after=["missing"])
    with pytest.raises(chute.ConfigurationError, match="step 'a' depends on unknown step.*'missing'"):
        dangling.run(app)
    with pytest.raises(chute.ConfigurationError, match="two steps are named 'a'"):
        DAG("dup").step("a", s(app, "record", "a")).step("a", s(app, "record", "a"))
    assert app.broker.stats() == []


def test_unencodable_step_arguments_fail_before_any_step_runs(app: chute.App) -> None:
    bad = chain(s(app, "add", 1, 2), app.tasks["record"].s({1, 2}))  # type: ignore[arg-type]
    with pytest.raises(chute.SerializationError, match=r"record \(step s\.1\): args\[0\]: set is not allowed"):
        bad.run(app)
    assert app.broker.stats() == []


@pytest.mark.slow
def test_chord_of_1000_on_4_worker_processes_fires_once(tmp_path: Path) -> None:
    url, log = f"sqlite:///{tmp_path}/chord.db", tmp_path / "callback.log"
    app = chute.App(url)
    square = app.task(name="apps.flows.square")(lambda x: None)
    total = app.task(name="apps.flows.total")(lambda values: None)
    wf = chord([square.s(i) for i in range(1000)], total.s()).run(app)
    workers = [start_worker(url, "apps.flows:app", "-c", "4", CHUTE_TEST_LOG=str(log)) for _ in range(4)]
    try:
        assert wf.get(timeout=120) == sum(i * i for i in range(1000))
        time.sleep(1.0)  # any second firing would land now
    finally:
        for w in workers:
            stop(w)
    assert log.read_text().splitlines() == [f"1000 {sum(i * i for i in range(1000))}"]
