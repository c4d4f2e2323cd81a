"""Publish/subscribe and atomic batches, against memory and SQLite."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

import chute
from chute import State
from chute.topics import group_queue
from helpers import wait_for, worker_thread


def stored(app: chute.App) -> int:
    """Messages in every queue (a broker may list a declared group's queue while it is empty)."""
    return sum(s.ready + s.in_flight + s.delayed + s.dead for s in app.broker.stats())


def unrouted(app: chute.App, topic: str) -> int:
    return int(app.store.get_meta(f"chute.unrouted:{topic}") or 0)  # the same on every broker


def drained(app: chute.App) -> bool:
    return sum(s.ready + s.in_flight + s.delayed for s in app.broker.stats()) == 0


def test_every_group_gets_every_event_and_members_share_them(app: chute.App) -> None:
    seen: dict[str, list[tuple[Any, str, str]]] = {"billing": [], "email": []}
    lock = threading.Lock()

    def handler(group: str) -> Any:
        def handle(payload: dict[str, int]) -> None:
            job = chute.current_job()
            assert job is not None
            with lock:
                seen[group].append((payload["order"], job.envelope.name, threading.current_thread().name))
        return handle

    app.subscriber("order.*", group="billing")(handler("billing"))
    app.subscriber(["order.created", "refund.#"], group="email")(handler("email"))
    app.declare_subscribers()
    for i in range(30):
        app.publish("order.created", {"order": i})
    app.publish("refund.issued.eu", {"order": 99})
    with worker_thread(app, concurrency=4), worker_thread(app, concurrency=4):
        wait_for(lambda: len(seen["billing"]) == 30 and len(seen["email"]) == 31, what="all events")
        wait_for(lambda: drained(app), what="acks")
    assert sorted(o for o, _, _ in seen["billing"]) == list(range(30))
    assert sorted(o for o, _, _ in seen["email"]) == list(range(30)) + [99]
    assert {t for _, t, _ in seen["email"]} == {"order.created", "refund.issued.eu"}


def test_a_group_catches_up_on_what_it_missed_since_declared(app: chute.App) -> None:
    got: list[int] = []
    app.subscriber("audit.#", group="audit")(lambda payload: got.append(payload))
    app.publish("audit.login", 0)  # before the group exists: not delivered to it, counted
    assert unrouted(app, "audit.login") == 1
    app.declare_subscribers()  # declared, but no worker runs
    for i in range(1, 21):
        app.publish("audit.login.ok", i)
    assert app.broker.stats([group_queue("audit")])[0].ready == 20
    with worker_thread(app):
        wait_for(lambda: len(got) == 20, what="catch up")
    assert sorted(got) == list(range(1, 21))


def test_publishing_to_a_topic_nobody_wants_is_counted_not_an_error(app: chute.App) -> None:
    for _ in range(3):
        app.publish("nobody.listens", {"x": 1})
    assert unrouted(app, "nobody.listens") == 3
    assert app.broker.stats() == []


def test_a_subscriber_that_always_fails_is_dead_lettered_per_group(app: chute.App) -> None:
    good: list[int] = []

    @app.subscriber("job.done", group="broken", retries=1, retry_backoff=0.01)
    def broken(payload: int) -> None:
        raise RuntimeError(f"cannot handle {payload}")

    app.subscriber("job.done", group="fine")(lambda payload: good.append(payload))
    app.declare_subscribers()
    event_ids = [app.publish("job.done", i) for i in range(5)]
    with worker_thread(app):
        wait_for(lambda: len(good) == 5 and len(app.broker.dead_letters(group_queue("broken"))) == 5, what="DLQ")
    dead = app.broker.dead_letters(group_queue("broken"))
    assert {d.id for d in dead} == {f"{e}:broken" for e in event_ids}
    assert all(d.reason.startswith("RuntimeError: cannot handle") for d in dead)
    assert app.result(f"{event_ids[0]}:broken").status is State.DEAD
    assert app.result(f"{event_ids[0]}:fine").status is State.SUCCEEDED
    assert app.broker.dead_letters(group_queue("fine")) == []


@pytest.mark.parametrize(("pattern", "message"), [
    ("order..created", "word 2 \\(''\\) must be"),
    ("order.cre ated", "word 2 \\('cre ated'\\)"),
    ("", "non-empty"),
    ("order.*x", "word 2 \\('\\*x'\\)"),
])
def test_malformed_patterns_are_refused_at_declaration(app: chute.App, pattern: str, message: str) -> None:
    with pytest.raises(chute.ConfigurationError, match=message):
        app.subscriber(pattern, group="g")(lambda payload: None)
    assert app.subscribers == {}


def test_bad_publishes_fail_clearly_and_store_nothing(app: chute.App) -> None:
    app.subscriber("#", group="all")(lambda payload: None)
    app.declare_subscribers()
    with pytest.raises(ValueError, match="wildcards are for subscriptions"):
        app.publish("order.*", {})
    with pytest.raises(chute.SerializationError, match=r"event order.created: args\[0\]\['when'\]: datetime"):
        from datetime import datetime, timezone

        app.publish("order.created", {"when": datetime.now(timezone.utc)})
    with pytest.raises(chute.ConfigurationError, match="declared twice"):
        app.subscriber("x", group="all")(lambda payload: None)
    assert stored(app) == 0


def test_batch_is_all_or_nothing(app: chute.App) -> None:
    @app.task
    def f(x: int) -> int:
        return x

    app.subscriber("thing.*", group="g")(lambda payload: None)
    app.declare_subscribers()
    with pytest.raises(RuntimeError, match="rolled back"), app.batch():
        f.delay(1)
        app.send_many([f.s(2), f.s(3)])
        app.publish("thing.made", 1)
        raise RuntimeError("rolled back")
    assert stored(app) == 0
    with app.batch():
        handles = [f.delay(1), *app.send_many([f.s(2), f.s(3)])]
        app.publish("thing.made", 1)
        assert stored(app) == 0  # nothing is visible until the block ends
    counts = Counter({s.queue: s.ready for s in app.broker.stats()})
    assert counts == {"default": 3, group_queue("g"): 1}
    with worker_thread(app):
        assert [h.get(timeout=10) for h in handles] == [1, 2, 3]


def test_batch_handles_follow_idempotency_keys(app: chute.App) -> None:
    @app.task
    def f(x: int) -> int:
        return x

    first = f.send((1,), idempotency_key="once")
    with app.batch():
        again = f.send((1,), idempotency_key="once")
    assert again.id == first.id
