"""Conformance for the cases where the brokers once disagreed, each through both sides of a broker: the
sync call and its asyncio twin (the native side where the broker has one, else the sync call on a
thread, as the App does). Idempotency is scoped to the queue; unrouted events are counted in the store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from chute.brokers.base import Outgoing, Queue
from chute.brokers.shared import unrouted_key
from chute.brokers.store import Store
from chute.results import ResultRecord
from chute.states import State
from chute.topics import group_queue

Publish = Callable[[Sequence[Outgoing]], list[str]]


@pytest.fixture(params=["sync", "async"])
def publish(request: pytest.FixtureRequest, broker: Queue) -> Publish:
    if request.param == "sync":
        return broker.publish

    def through_the_loop(messages: Sequence[Outgoing]) -> list[str]:
        async def go() -> list[str]:
            try:
                if broker.aio is None:
                    return await asyncio.to_thread(broker.publish, messages)
                return await broker.aio.publish(messages)
            finally:
                if broker.aio is not None:
                    await broker.aio.aclose()  # its connections belong to this loop

        return asyncio.run(go())

    return through_the_loop


def test_the_same_idempotency_key_in_two_queues_makes_two_messages(
        broker: Queue, publish: Publish, queue_name: str) -> None:
    a, b = queue_name, queue_name + "b"
    first = Outgoing(a, f"{a}-1", b"1", idempotency_key="k", idempotency_window=60)
    again = Outgoing(a, f"{a}-2", b"2", idempotency_key="k", idempotency_window=60)
    elsewhere = Outgoing(b, f"{b}-1", b"3", idempotency_key="k", idempotency_window=60)
    assert publish([first]) == [f"{a}-1"]
    assert publish([again, elsewhere]) == [f"{a}-1", f"{b}-1"]  # one key per queue
    assert [d.body for d in broker.fetch([a], 10, 30, 0)] == [b"1"]
    assert [d.body for d in broker.fetch([b], 10, 30, 0)] == [b"3"]


def test_unrouted_events_are_counted_in_the_store(
        broker: Queue, store: Store, publish: Publish, queue_name: str) -> None:
    topic, group = f"nobody.{queue_name}", f"{queue_name}g"
    broker.declare_group(group, [f"somebody.{queue_name}"])
    events = [Outgoing("", f"{queue_name}-{i}", b"e", topic=t)
              for i, t in enumerate([topic, f"somebody.{queue_name}", topic])]
    assert publish(events) == [e.id for e in events]
    assert store.get_meta(unrouted_key(topic)) == "2"
    assert store.get_meta(unrouted_key(f"somebody.{queue_name}")) is None
    assert [d.id for d in broker.fetch([group_queue(group)], 10, 30, 0)] == [f"{queue_name}-1:{group}"]


@pytest.mark.parametrize("side", ["sync", "async"])
def test_a_result_reads_the_same_through_both_sides(store: Store, side: str, queue_name: str) -> None:
    done = ResultRecord(f"{queue_name}-t", State.SUCCEEDED, name="t", value=b"1", updated_at=1.0)
    store.store([done])
    if side == "sync":
        got, waited = store.get(done.task_id), store.wait(done.task_id, 1)
    else:
        async def both() -> tuple[ResultRecord | None, ResultRecord | None]:
            aio = store.aio
            try:
                if aio is None:
                    return (await asyncio.to_thread(store.get, done.task_id),
                            await asyncio.to_thread(store.wait, done.task_id, 1))
                return await aio.get(done.task_id), await aio.wait(done.task_id, 1)
            finally:
                if aio is not None:
                    await aio.aclose()

        got, waited = asyncio.run(both())
    assert got is not None and waited is not None
    assert (got.state, got.value, waited.state, waited.value) == (State.SUCCEEDED, b"1", State.SUCCEEDED, b"1")
