"""Conformance for what pub/sub, flow control, workflows, scheduling and cancellation need from a
broker and its result store: topic fan-out, queue limits, and the store's atomic primitives."""

from __future__ import annotations

import threading
import time

import pytest

from chute.brokers.base import Outgoing, Queue
from chute.brokers.store import Store
from chute.errors import QueueFull
from chute.results import ResultRecord
from chute.states import State
from chute.topics import group_queue


def event(eid: str, topic: str) -> Outgoing:
    return Outgoing("", eid, f"body-{eid}".encode(), topic=topic)


def test_events_fan_out_to_matching_groups_only(broker: Queue, queue_name: str) -> None:
    g1, g2, g3 = f"{queue_name}a", f"{queue_name}b", f"{queue_name}c"
    broker.declare_group(g1, ["order.*"])
    broker.declare_group(g2, ["order.created", "refund.#"])
    broker.declare_group(g3, ["shipping.#"])
    ids = broker.publish([event(f"{queue_name}-1", "order.created"), event(f"{queue_name}-2", "refund.x.y")])
    assert ids == [f"{queue_name}-1", f"{queue_name}-2"]
    got = {g: [d.id for d in broker.fetch([group_queue(g)], 10, 30, 0)] for g in (g1, g2, g3)}
    assert got == {g1: [f"{queue_name}-1:{g1}"], g2: [f"{queue_name}-1:{g2}", f"{queue_name}-2:{g2}"], g3: []}


def test_an_event_nobody_wants_is_not_an_error(broker: Queue, queue_name: str) -> None:
    assert broker.publish([event(f"{queue_name}-x", f"nobody.{queue_name}")]) == [f"{queue_name}-x"]


def test_a_group_keeps_events_while_no_consumer_runs(broker: Queue, queue_name: str) -> None:
    g = f"{queue_name}late"
    broker.publish([event(f"{queue_name}-before", "audit.one")])  # before the group existed
    broker.declare_group(g, ["audit.#"])
    broker.publish([event(f"{queue_name}-{i}", "audit.one") for i in range(5)])
    assert [d.id for d in broker.fetch([group_queue(g)], 10, 30, 0)] == [f"{queue_name}-{i}:{g}" for i in range(5)]


def test_max_length_reject_refuses_the_whole_batch(broker: Queue, queue_name: str) -> None:
    def limited(i: int) -> Outgoing:
        return Outgoing(queue_name, f"{queue_name}-{i}", b"x", max_length=3)

    broker.publish([limited(0), limited(1)])
    with pytest.raises(QueueFull, match=queue_name):
        broker.publish([limited(2), limited(3)])
    broker.publish([limited(2)])
    assert broker.stats([queue_name])[0].ready == 3


def test_max_length_drop_oldest_keeps_the_newest(broker: Queue, queue_name: str) -> None:
    broker.publish([Outgoing(queue_name, f"{queue_name}-{i}", str(i).encode(), max_length=3, on_full="drop_oldest")
                    for i in range(5)])
    broker.publish([Outgoing(queue_name, f"{queue_name}-5", b"5", max_length=3, on_full="drop_oldest")])
    assert [d.body for d in broker.fetch([queue_name], 10, 30, 0)] == [b"3", b"4", b"5"]


def test_cancel_unless_finished(store: Store, queue_name: str) -> None:
    s = store
    assert s.cancel(f"{queue_name}-queued", 60) is State.CANCELLED
    s.store([ResultRecord(f"{queue_name}-done", State.SUCCEEDED, updated_at=time.time())])
    assert s.cancel(f"{queue_name}-done", 60) is State.SUCCEEDED
    assert s.cancelled([f"{queue_name}-queued", f"{queue_name}-done", "other"]) == {f"{queue_name}-queued"}


def test_join_counts_each_member_once_under_concurrency(store: Store, queue_name: str) -> None:
    s = store
    counts: list[int] = []
    threads = [threading.Thread(target=lambda m=m: counts.append(s.join(queue_name, f"m{m % 50}", 60)))
               for m in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(counts) == 50 and counts.count(50) >= 1
    assert s.join(queue_name, "m0", 60) == 50


def test_leases_have_one_holder_and_expire(store: Store, queue_name: str) -> None:
    s = store
    assert s.acquire_lease(queue_name, "a", 0.5)
    assert not s.acquire_lease(queue_name, "b", 0.5)
    assert s.acquire_lease(queue_name, "a", 0.5)  # renewal
    time.sleep(0.7)
    assert s.acquire_lease(queue_name, "b", 0.5)
    s.release_lease(queue_name, "a")  # not the holder: nothing happens
    assert not s.acquire_lease(queue_name, "a", 0.5)
    s.release_lease(queue_name, "b")
    assert s.acquire_lease(queue_name, "a", 0.5)


def test_meta_values(store: Store, queue_name: str) -> None:
    s = store
    assert s.get_meta(queue_name) is None
    s.set_meta(queue_name, "1795392000.5")
    assert s.get_meta(queue_name) == "1795392000.5"


def test_token_bucket_limits_the_rate(store: Store, queue_name: str) -> None:
    s = store
    taken, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 1.0:
        wait = s.take_token(queue_name, 20.0, 1.0)
        if wait:
            time.sleep(wait)
        else:
            taken += 1
    assert 17 <= taken <= 23


def test_count_start_counts_per_attempt(store: Store, queue_name: str) -> None:
    s = store
    assert [s.count_start(queue_name, 0, 60) for _ in range(3)] == [1, 2, 3]
    assert s.count_start(queue_name, 1, 60) == 1


def test_started_marks_a_batch_and_reports_the_cancelled(store: Store, queue_name: str) -> None:
    s = store
    ids = [f"{queue_name}-{i}" for i in range(4)]
    s.cancel(ids[1], 60)
    s.store([ResultRecord(ids[2], State.SUCCEEDED, updated_at=time.time())])
    now = time.time()
    assert s.started([ResultRecord(i, State.STARTED, updated_at=now) for i in ids]) == {ids[1]}
    assert s.get(ids[1]).state is State.CANCELLED  # type: ignore[union-attr]
    assert s.get(ids[2]).state is State.SUCCEEDED  # type: ignore[union-attr]  # a finished record stands
