"""The transactional outbox with SQLAlchemy, on SQLite and a real PostgreSQL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, text
from sqlalchemy.orm import Session

import chute
from chute.outbox.sqlalchemy import SQLAlchemyOutbox
from conftest import postgres_schema
from helpers import env_for, wait_for, worker_thread
from reliability.history import scale


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The application's database: a SQLite file, or a schema of the test's own on the shared PostgreSQL."""
    if request.param == "postgresql":
        with postgres_schema("postgresql+psycopg") as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path}/shop.db"


@pytest.fixture
def setup(db_url: str, tmp_path: Path) -> Iterator[tuple[chute.App, SQLAlchemyOutbox, list[int]]]:
    app = chute.App(f"sqlite:///{tmp_path}/broker.db")
    effects: list[int] = []

    @app.task(name="receipt")
    def receipt(order: int) -> None:
        effects.append(order)

    engine = create_engine(db_url)
    outbox = SQLAlchemyOutbox(app, engine, table=f"chute_outbox_{os.urandom(4).hex()}")
    outbox.create_table()
    with engine.begin() as c:
        c.execute(text("CREATE TABLE IF NOT EXISTS orders_t (id INTEGER PRIMARY KEY)"))
    yield app, outbox, effects
    outbox.table.drop(engine)
    with engine.begin() as c:
        c.execute(text("DROP TABLE IF EXISTS orders_t"))
    engine.dispose()
    app.close()


def pending(outbox: SQLAlchemyOutbox) -> int:
    with outbox.engine.connect() as c:
        return int(c.execute(text(f"SELECT count(*) FROM {outbox.table.name}")).scalar_one())


def test_sent_if_and_only_if_the_transaction_commits(setup: tuple[chute.App, SQLAlchemyOutbox, list[int]]) -> None:
    app, outbox, effects = setup
    receipt = app.tasks["receipt"]
    with Session(outbox.engine) as session, session.begin():
        session.execute(text("INSERT INTO orders_t VALUES (1)"))
        outbox.send(session, receipt.s(1))
    with pytest.raises(RuntimeError), Session(outbox.engine) as session, session.begin():
        session.execute(text("INSERT INTO orders_t VALUES (2)"))
        outbox.send(session, receipt.s(2))
        raise RuntimeError("the order failed")
    assert pending(outbox) == 1
    assert app.broker.stats() == []  # nothing reaches the broker before the relay
    assert outbox.relay_once() == 1
    assert pending(outbox) == 0
    with worker_thread(app):
        wait_for(lambda: effects == [1], what="the committed order's receipt")
        time.sleep(0.2)
    assert effects == [1]


def test_the_relay_keeps_a_blocking_queue_s_limit_and_waits_for_room(
        setup: tuple[chute.App, SQLAlchemyOutbox, list[int]]) -> None:
    # the relay published straight to the broker: past the queue's limit, and never waiting for room
    app, outbox, effects = setup
    app.queue("default", max_length=2, on_full="block", block_timeout=10)
    receipt = app.tasks["receipt"]
    receipt.delay(0)
    receipt.delay(1)  # the queue is full
    with Session(outbox.engine) as session, session.begin():
        outbox.send(session, receipt.s(2))
    relayed: list[int] = []
    relay = threading.Thread(target=lambda: relayed.append(outbox.relay_once()))
    relay.start()
    time.sleep(0.3)  # the relay is waiting for room, not over the limit
    assert relay.is_alive() and app.broker.stats(["default"])[0].ready == 2
    with worker_thread(app):
        relay.join(timeout=10)
        wait_for(lambda: sorted(effects) == [0, 1, 2], what="all three receipts")
    assert relayed == [1] and pending(outbox) == 0


def test_events_through_the_outbox(setup: tuple[chute.App, SQLAlchemyOutbox, list[int]]) -> None:
    app, outbox, effects = setup
    app.subscriber("order.#", group="ledger")(lambda payload: effects.append(payload))
    app.declare_subscribers()
    with Session(outbox.engine) as session, session.begin():
        outbox.publish(session, "order.paid", 7)
    outbox.relay_once()
    with worker_thread(app):
        wait_for(lambda: effects == [7], what="the event")


def test_relay_crash_between_publish_and_delete_delivers_once(
        setup: tuple[chute.App, SQLAlchemyOutbox, list[int]]) -> None:
    app, outbox, effects = setup
    receipt = app.tasks["receipt"]
    with Session(outbox.engine) as session, session.begin():
        for i in range(5):
            outbox.send(session, receipt.s(i))
    store = outbox.store()
    real_done = store.done

    def crash(ids: object) -> None:  # the relay dies after publishing, before deleting
        assert store.conn is not None
        store.conn.rollback()
        store.conn.close()
        raise KeyboardInterrupt

    store.done = crash  # type: ignore[method-assign]
    from chute.outbox import relay_batch

    with pytest.raises(KeyboardInterrupt):
        relay_batch(app, store)
    store.done = real_done  # type: ignore[method-assign]
    assert pending(outbox) == 5 and app.broker.stats(["default"])[0].ready == 5
    assert outbox.relay_once() == 5  # published again: the broker keeps one copy of each
    assert pending(outbox) == 0 and app.broker.stats(["default"])[0].ready == 5
    with worker_thread(app):
        wait_for(lambda: sorted(effects) == list(range(5)), what="five receipts")
        time.sleep(0.2)
    assert sorted(effects) == list(range(5))


def test_an_undecodable_row_is_set_aside_and_the_rest_go_through(
        setup: tuple[chute.App, SQLAlchemyOutbox, list[int]]) -> None:
    app, outbox, effects = setup
    with outbox.engine.begin() as c:
        c.execute(insert(outbox.table).values(id="bad", queue="default", body=b"\xff not a message", priority=0,
                                              created=0.0))
    with Session(outbox.engine) as session, session.begin():
        outbox.send(session, app.tasks["receipt"].s(9))
    assert outbox.relay_once() == 1
    with outbox.engine.connect() as c:
        rows = c.execute(text(f"SELECT id, failed FROM {outbox.table.name}")).all()
    assert len(rows) == 1 and rows[0][0] == "bad" and rows[0][1].startswith("decode_error")
    assert outbox.relay_once() == 0  # not tried again
    with worker_thread(app):
        wait_for(lambda: effects == [9], what="the good row")


def test_unencodable_arguments_fail_in_the_transaction(setup: tuple[chute.App, SQLAlchemyOutbox, list[int]]) -> None:
    app, outbox, _ = setup
    with pytest.raises(chute.SerializationError, match=r"args\[0\]: set"), Session(outbox.engine) as session, \
            session.begin():
        outbox.send(session, app.tasks["receipt"].s({1}))  # type: ignore[arg-type]
    assert pending(outbox) == 0


RELAY = """
import sys, chute
from sqlalchemy import create_engine
from chute.outbox.sqlalchemy import SQLAlchemyOutbox
app = chute.App(sys.argv[1])
app.task(name="receipt")(lambda order: None)
outbox = SQLAlchemyOutbox(app, create_engine(sys.argv[2]), table=sys.argv[3])
print("relaying", flush=True)
outbox.run_relay(limit=7)
"""


def test_relay_process_sigkilled_at_random_instants(setup: tuple[chute.App, SQLAlchemyOutbox, list[int]],
                                              db_url: str) -> None:
    app, outbox, effects = setup
    receipt = app.tasks["receipt"]
    committed, n = 0, scale(200, 2000)  # half of them roll back
    for i in range(n):
        try:
            with Session(outbox.engine) as session, session.begin():
                outbox.send(session, receipt.s(i))
                if i % 2:
                    raise RuntimeError("rolled back")
            committed += 1
        except RuntimeError:
            pass
    kills, rng = 0, random.Random(int(os.environ.get("CHUTE_CHAOS_SEED", "7")))
    while pending(outbox) and kills < scale(60, 600):  # killed at random instants as it works
        with subprocess.Popen([sys.executable, "-c", RELAY, app.url, db_url, outbox.table.name],
                              env=env_for(app.url), stdout=subprocess.PIPE) as relay:
            assert relay.stdout is not None
            relay.stdout.readline()  # started (a loaded machine may take a second to import)
            time.sleep(rng.uniform(0.0, 0.2))
            relay.send_signal(signal.SIGKILL)
        kills += 1
    assert pending(outbox) == 0, f"relay made no progress in {kills} runs"
    with worker_thread(app, concurrency=4):
        wait_for(lambda: len(effects) >= committed, what="every committed receipt")
        time.sleep(0.3)
    assert sorted(effects) == list(range(0, n, 2))  # each committed one once, no rolled-back one
    print(f"{committed} committed, {n - committed} rolled back; relay SIGKILLed {kills} times: "
          f"{len(effects)} effects, each committed one once, no rolled-back one")
