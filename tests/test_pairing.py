"""Any queue pairs with any store: a task's state reads the same whichever pair runs it.

RabbitMQ with a SQLite store is the everyday case (tests/test_amqp.py); here the other brokers are
paired across: SQLite messages with results in Redis, Redis messages with results in SQLite, memory with
SQLite. QUEUED is marked by the producer, STARTED by the worker, as the pairing says (chute.brokers.pairing).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import chute
from chute import State
from conftest import BROKERS, broker_url
from helpers import wait_for, worker_thread

PAIRS = [("sqlite", "redis"), ("redis", "sqlite"), ("memory", "sqlite")]


@pytest.mark.parametrize(("queue_kind", "store_kind"), PAIRS, ids=[f"{q}-queue-{s}-store" for q, s in PAIRS])
def test_a_task_reads_the_same_on_a_queue_paired_with_another_store(
        queue_kind: str, store_kind: str, tmp_path: Path) -> None:
    if not {queue_kind, store_kind} <= set(BROKERS):
        pytest.skip(f"CHUTE_TEST_BROKERS leaves out {queue_kind} or {store_kind}")
    (tmp_path / "store").mkdir()
    with broker_url(queue_kind, tmp_path) as queue_url, \
            broker_url(store_kind, tmp_path / "store") as store_url:
        app = chute.App(queue_url, results=store_url, lease=2)
        assert app.store is not app.broker  # type: ignore[comparison-overlap]
        go = threading.Event()

        @app.task(retries=0)
        def slow(x: int) -> int:
            go.wait(10)
            return x * 2

        first, cancelled = slow.delay(21), slow.delay(0)
        assert first.status is State.QUEUED and cancelled.status is State.QUEUED  # marked by the producer
        assert cancelled.cancel()
        try:
            with worker_thread(app):
                wait_for(lambda: first.status is State.STARTED, what="STARTED in the other store")
                assert [w.queues for w in app.store.workers()] == [["default"]]
                go.set()
                assert first.get(timeout=10) == 42
            assert first.status is State.SUCCEEDED and cancelled.status is State.CANCELLED
            assert app.broker.stats(["default"])[0].ready == 0
        finally:
            go.set()
            app.close()
