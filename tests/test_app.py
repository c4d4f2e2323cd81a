"""The producer API: App, tasks, send options, handles, idempotency, URLs, eager mode."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import chute
from chute import State
from helpers import sqlite_db, wait_for, worker_thread


def test_delay_then_get_through_a_worker(app: chute.App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    r = add.delay(2, 3)
    assert r.status is State.QUEUED and not r.ready()
    with worker_thread(app, concurrency=2):
        assert r.get(timeout=10) == 5
    assert r.status is State.SUCCEEDED and r.ready()
    assert app.result(r.id).get(timeout=1) == 5
    info = r.info()
    assert info is not None and info.name == add.name and info.attempt == 0


def test_direct_call_runs_locally(app: chute.App) -> None:
    @app.task
    def double(x: int) -> int:
        return 2 * x

    assert double(4) == 8
    assert app.broker.stats() == []


def test_get_times_out_with_the_state(app: chute.App) -> None:
    @app.task
    def never() -> None:
        pass

    r = never.delay()
    t0 = time.monotonic()
    with pytest.raises(chute.TaskTimeout, match=f"task {r.id} not finished after 0.2 s .state: queued"):
        r.get(timeout=0.2)
    assert time.monotonic() - t0 < 2


def test_unknown_id_is_unknown(app: chute.App) -> None:
    assert app.result("no-such-task").status is State.UNKNOWN


def test_started_state_is_visible_while_running(app: chute.App, tmp_path: Path) -> None:
    gate = tmp_path / "gate"

    @app.task
    def waits() -> str:
        while not gate.exists():
            time.sleep(0.01)
        return "done"

    r = waits.delay()
    with worker_thread(app, concurrency=1):
        wait_for(lambda: r.status is State.STARTED, what="STARTED")
        gate.touch()
        assert r.get(timeout=10) == "done"


def test_failure_is_raised_with_original_type_and_remote_traceback(app: chute.App) -> None:
    @app.task(retries=0)
    def explode(x: int) -> None:
        raise KeyError(f"missing {x}")

    r = explode.delay(7)
    with worker_thread(app), pytest.raises(KeyError) as info:
        r.get(timeout=10)
    assert "missing 7" in str(info.value)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "Remote traceback" in notes and "explode" in notes
    assert isinstance(info.value.__cause__, chute.TaskFailed)
    assert r.status is State.DEAD


class CustomError(Exception):
    pass


def test_unimportable_error_types_arrive_as_task_failed(app: chute.App) -> None:
    @app.task(retries=0)
    def explode() -> None:
        raise CustomError("custom")

    r = explode.delay()
    with worker_thread(app):
        wait_for(r.ready)
    rec = r.info()
    assert rec is not None and rec.error is not None
    assert rec.error.type == "test_app.CustomError" and "custom" in rec.error.traceback
    with pytest.raises(CustomError):  # the module is loaded here, so the type is rebuilt
        r.get(timeout=1)
    rebuilt = chute.task.rebuild_exception("not.loaded.Module.Error", "m", "tb")
    assert isinstance(rebuilt, chute.TaskFailed) and "Remote traceback" in str(rebuilt)


def test_send_options_countdown_eta_priority_queue(app: chute.App) -> None:
    order: list[str] = []

    @app.task(queue="other")
    def record(tag: str) -> None:
        order.append(tag)

    record.send(("low",), priority=0)
    record.send(("high",), priority=9)
    later = record.send(("later",), countdown=1.5)  # both still delayed when counted, on a loaded machine too
    at = record.send(("eta",), eta=datetime.now(timezone.utc) + timedelta(seconds=1))
    elsewhere = record.send(("elsewhere",), queue="third")
    stats = {s.queue: s for s in app.broker.stats()}
    assert stats["other"].ready == 2 and stats["other"].delayed == 2 and stats["third"].ready == 1
    with worker_thread(app, queues=["other"], concurrency=1):
        later.get(timeout=10)
        at.get(timeout=10)
    assert order[:2] == ["high", "low"] and sorted(order[2:]) == ["eta", "later"]
    assert elsewhere.status is State.QUEUED


def test_bad_send_options_are_refused(app: chute.App) -> None:
    @app.task
    def f() -> None:
        pass

    with pytest.raises(ValueError, match="priority must be an int from 0"):
        f.send(priority=10)
    with pytest.raises(ValueError, match="naive datetime"):
        f.send(eta=datetime.now())
    with pytest.raises(ValueError, match="countdown or eta, not both"):
        f.send(countdown=1, eta=time.time())
    with pytest.raises(TypeError, match="countdown must be seconds"):
        f.send(countdown="soon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="priority"):
        app.task(priority=-1)(lambda: None)
    assert app.broker.stats() == []


def test_send_many_is_one_batch_in_order(app: chute.App) -> None:
    @app.task
    def square(x: int) -> int:
        return x * x

    results = app.send_many([square.s(i) for i in range(200)])
    assert app.broker.stats()[0].ready == 200
    with worker_thread(app):
        assert [r.get(timeout=10) for r in results] == [i * i for i in range(200)]


def test_send_many_is_all_or_nothing(app: chute.App) -> None:
    @app.task
    def f(x: object) -> None:
        pass

    with pytest.raises(chute.SerializationError, match=r"args\[0\]"):
        app.send_many([f.s(1), f.s(2), f.s(object())])
    assert app.broker.stats() == []


def test_idempotency_key_returns_the_first_handle(app: chute.App) -> None:
    calls: list[int] = []

    @app.task
    def charge(order: int) -> int:
        calls.append(order)
        return order

    first = charge.send((1,), idempotency_key="order-1")
    second = charge.send((1,), idempotency_key="order-1")
    third = charge.send((2,), idempotency_key="order-2")
    assert first.id == second.id != third.id
    with worker_thread(app):
        assert first.get(timeout=10) == 1 and third.get(timeout=10) == 2
    assert charge.send((1,), idempotency_key="order-1").id == first.id  # still within the window
    assert sorted(calls) == [1, 2]


def test_redelivered_keyed_message_that_succeeded_is_acked_without_running(app: chute.App) -> None:
    calls: list[int] = []

    @app.task
    def charge(order: int) -> int:
        calls.append(order)
        return order

    r = charge.send((5,), idempotency_key="k5")
    with worker_thread(app):
        r.get(timeout=10)
    # the worker died after recording success but before its ack: the same message comes back
    app.broker.publish([chute.brokers.Outgoing("default", r.id, app.codec.encode(app.codec.decode(
        _body_of(app, r.id))))])
    with worker_thread(app):
        wait_for(lambda: sum(s.ready + s.in_flight for s in app.broker.stats(["default"])) == 0)
    assert calls == [5]


def _body_of(app: chute.App, task_id: str) -> bytes:
    rec = app.result(task_id).info()
    assert rec is not None
    from chute.envelope import Envelope

    return app.codec.encode(Envelope(v=1, id=task_id, name=rec.name, created=time.time(), args=[5],
                                     idempotency_key="k5"))


def test_duplicate_task_names_are_refused(app: chute.App) -> None:
    app.task(name="same")(lambda: 1)
    with pytest.raises(chute.ConfigurationError, match="two tasks are named 'same'"):
        app.task(name="same")(lambda: 2)


def test_unknown_task_by_name(app: chute.App) -> None:
    with pytest.raises(chute.UnknownTask, match="no task named 'nope'"):
        app.send_task("nope")


def test_eager_mode_runs_inline(tmp_path: Path) -> None:
    app = chute.App("memory://", eager=True)

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    @app.task
    async def aadd(a: int, b: int) -> int:
        return a + b

    @app.task
    def fails() -> None:
        raise ValueError("eager failure")

    assert add.delay(1, 2).get() == 3
    assert aadd.delay(3, 4).get() == 7
    r = fails.delay()
    assert r.status is State.FAILED
    with pytest.raises(ValueError, match="eager failure"):
        r.get()
    with pytest.raises(chute.SerializationError):
        add.delay(object(), 1)
    assert [x.get() for x in app.send_many([add.s(1, 1), add.s(2, 2)])] == [2, 4]


# -- URLs and databases ------------------------------------------------------------------------
def test_default_url_and_chute_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHUTE_URL", raising=False)
    app = chute.App()
    assert app.url == "sqlite:///chute.db" and (tmp_path / "chute.db").exists()
    app.close()
    monkeypatch.setenv("CHUTE_URL", "memory://")
    assert chute.App().url == "memory://"


def test_three_slashes_relative_four_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    os.mkdir("sub")
    chute.App("sqlite:///sub/rel.db").close()
    assert (tmp_path / "sub" / "rel.db").exists()
    chute.App(f"sqlite:///{tmp_path}/abs.db").close()  # tmp_path starts with "/": four slashes
    assert (tmp_path / "abs.db").exists()


@pytest.mark.parametrize(("url", "message"), [
    ("", "is not a broker URL"),
    ("chute.db", "is not a broker URL"),
    ("sqllite:///x.db", "unknown broker scheme 'sqllite'"),
    ("sqlite://", "three slashes"),
    ("sqlite:///no/such/folder/x.db", "folder .* does not exist"),
    ("sqlite:///x.db?sync=full", "unknown option.*sync"),
    ("sqlite:///x.db?synchronous=off", "use 'normal' or 'full'"),
    ("amqp://u:secret@host/?queue_type=stream", "queue_type must be 'classic' or 'quorum'"),
])
def test_bad_urls_say_what_is_wrong(url: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(chute.InvalidURL, match=message) as info:
        chute.App(url)
    assert "secret" not in str(info.value)


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not SQLite " * 100)
    with pytest.raises(chute.NotAChuteDatabase, match="notes.txt is not a chute database"):
        chute.App(f"sqlite:///{path}")
    assert path.read_text().startswith("hello")


def test_another_applications_database_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    with sqlite_db(path) as c:
        c.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    with pytest.raises(chute.NotAChuteDatabase, match="another application .tables: orders"):
        chute.App(f"sqlite:///{path}")
    with sqlite_db(path) as c:
        assert [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["orders"]


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    chute.App(url).close()
    with sqlite_db(tmp_path / "x.db") as c:
        c.execute("UPDATE chute_meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(chute.NotAChuteDatabase, match="schema 99"):
        chute.App(url)


def test_repr_hides_passwords() -> None:
    from chute.brokers import redact_url

    assert redact_url("redis://:hunter2@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("amqp://guest:guest@h/") == "amqp://guest:***@h/"
    assert redact_url("sqlite:///x.db") == "sqlite:///x.db"
