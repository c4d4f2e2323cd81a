"""The RabbitMQ broker's asyncio side (aio-pika): native, the same frames as the sync side, clear errors.

The behaviour every broker shares (ids, waits, grouping, batches, limits, events, the event loop's
lag at 5,000 sends/s) is in test_async_client.py; the server restart, with a loop that lives
through it, is in test_amqp.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

import amqp_server
import chute
from chute import State
from chute.brokers.amqp import aio, aio_batch
from chute.errors import BrokerError, QueueFull
from conftest import broker_url
from helpers import worker_thread

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def vhost() -> Iterator[str]:
    with amqp_server.vhost() as name:
        yield name


def app_for(vhost: str, tmp_path: Path, results: str | None = None) -> chute.App:
    return chute.App(amqp_server.url(vhost), results=results or f"sqlite:///{tmp_path}/results.db")


def test_async_publish_goes_out_on_aio_pika_with_no_thread(vhost: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """With the results on Redis, once a queue, its delay level and the topic exchange are declared,
    sends, delayed sends, batches and events use neither pika nor a thread."""
    with broker_url("redis", tmp_path) as results:
        app = app_for(vhost, tmp_path, results)

        @app.task
        def add(a: int, b: int) -> int:
            return a + b

        @app.subscriber("order.*", group="billing")
        def bill(payload: dict[str, int]) -> int:
            return payload["n"]

        app.declare_subscribers()

        async def first() -> None:  # declares the queue, the delay level and the topic exchange: on a thread
            await add.delay_async(0, 0)
            await add.send_async((0, 0), countdown=2)
            await app.publish_async("order.none", {"n": 0})
            await app.aclose()

        async def native() -> dict[str, Any]:
            one = await add.delay_async(1, 2)
            many = await app.send_many_async([add.s(i, i) for i in range(20)])
            late = await add.send_async((2, 2), countdown=2)  # still waiting when asked, on a loaded machine too
            event = await app.publish_async("order.created", {"n": 7})
            out = {"queued": await one.status_async(), "late": await late.status_async(),
                   "values": [await r.wait(timeout=20) for r in (one, *many, late)],
                   "billing": await app.result(f"{event}:billing").wait(timeout=20)}
            await app.aclose()
            return out

        asyncio.run(first())

        def no_thread(*_a: Any, **_k: Any) -> Any:
            raise AssertionError("a thread was used")

        monkeypatch.setattr(asyncio, "to_thread", no_thread)
        monkeypatch.setattr(app.broker._sender, "send", no_thread)  # type: ignore[attr-defined]  # pika's publish: not used either
        with worker_thread(app, queues=["default", "chute.group.billing"]):
            out = asyncio.run(native())
        app.close()
    assert out["queued"] in (State.QUEUED, State.STARTED, State.SUCCEEDED)
    assert out["late"] is State.QUEUED
    assert out["values"] == [3, *(2 * i for i in range(20)), 4]
    assert out["billing"] == 7


def test_one_publish_per_message_where_batching_is_unavailable(vhost: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """aiormq's own basic_publish, used if its channel bookkeeping ever changes shape: the same outcome."""
    monkeypatch.setattr(aio, "can_batch", lambda channel: False)
    app = app_for(vhost, tmp_path)

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    async def main() -> list[int]:
        handles = await app.send_many_async([add.s(i, 1) for i in range(30)])
        handles.append(await add.send_async((5, 5), countdown=0.1))
        values = [await r.wait(timeout=20) for r in handles]
        await app.aclose()
        return values

    with worker_thread(app):
        assert asyncio.run(main()) == [i + 1 for i in range(30)] + [10]
    app.close()


def test_plain_messages_are_framed_byte_for_byte_as_pamqp_frames_them() -> None:
    """The hand-written content frames of a plain message (no headers, one body frame)."""
    import pamqp.body
    import pamqp.frame
    from pamqp.header import ContentHeader

    for message_id in ("0190abcdef0123456789abcdef012345", "x", "é" * 10):
        for body in (b"a", b"x" * 1000):
            for mode, priority in ((2, 0), (2, 9), (1, 5)):
                props = aio_batch.aiormq.spec.Basic.Properties(delivery_mode=mode, message_id=message_id,
                                                              priority=priority)
                expected = pamqp.frame.marshal(ContentHeader(properties=props, body_size=len(body)), 3) + \
                    pamqp.frame.marshal(pamqp.body.ContentBody(body), 3)
                assert aio_batch.plain_content(3, body, mode, priority, message_id) == expected


@pytest.mark.parametrize("side", ["sync", "async"])
def test_a_queue_deleted_behind_our_back_is_a_clear_error_then_declared_again(
        side: str, vhost: str, tmp_path: Path) -> None:
    app = app_for(vhost, tmp_path)

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    def send(i: int) -> str:
        if side == "sync":
            return add.delay(i, i).id

        async def one() -> str:
            try:
                return (await add.delay_async(i, i)).id
            finally:
                await app.aclose()

        return asyncio.run(one())

    send(1)
    conn = pika.BlockingConnection(pika.URLParameters(amqp_server.url(vhost)))
    conn.channel().queue_delete("default")
    conn.close()
    with pytest.raises(BrokerError, match="returned message .* as unroutable"):
        send(2)
    kept = send(3)  # declared anew
    with worker_thread(app):
        assert app.result(kept).get(timeout=20) == 6
    app.close()


def test_messages_the_server_refuses_are_queue_full(vhost: str, tmp_path: Path) -> None:
    """basic.nack (a max-length policy with overflow=reject-publish) raises QueueFull, as the sync side does."""
    amqp_server.set_policy(vhost, "cap", "^capped$", '{"max-length": 2, "overflow": "reject-publish"}')
    app = app_for(vhost, tmp_path)

    @app.task(queue="capped")
    def noop(i: int) -> None:
        pass

    async def main() -> tuple[int, str]:
        await noop.delay_async(0)  # declares the queue (on a thread), then the policy applies
        await asyncio.sleep(0.5)
        with pytest.raises(QueueFull) as full:
            await app.send_many_async([noop.s(i) for i in range(1, 6)])
        await app.aclose()
        return 0, str(full.value)

    _, message = asyncio.run(main())
    assert "refused" in message and "of 5" in message
    (stats,) = app.broker.stats(["capped"])
    assert stats.ready == 2  # the first and one of the batch; the others were refused, not lost silently
    app.close()
