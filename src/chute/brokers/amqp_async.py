"""The RabbitMQ broker's asyncio side: publish on aio-pika with publisher confirms, never blocking the loop.

It serves one AMQPBroker and sends exactly its frames (`AMQPBroker._frame`: the same exchanges,
routing keys, properties and headers), so a message published here is indistinguishable from one
published by `AMQPBroker.publish`. What a publish needs besides its frames stays with the broker's
sync side and runs on a thread when needed: declaring a queue, delay level or exchange this process
has not declared yet (once each), idempotency claims, max_length checks. The QUEUED marks go to the
App's result store natively where it has an asyncio twin (Redis), else on a thread.
Round trips: one confirm wait per batch (all its messages published, then every confirm awaited).

aio-pika connections belong to the event loop that opened them, so each loop gets one of its own,
closed by `aclose()` or, at the latest, when the loop shuts down (as redis_async.py does).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import aio_pika
import aiormq
import aiormq.abc
import aiormq.exceptions
import pamqp.frame
from aiormq.abc import ChannelFrame
from pamqp.header import ContentHeader

from ..errors import BrokerError, BrokerUnavailable
from .amqp_links import REQUEST_TIMEOUT
from .base import Outgoing
from .shared import queued_marks

if TYPE_CHECKING:
    from .amqp import AMQPBroker

for _name in ("aiormq", "aio_pika"):
    if logging.getLogger(_name).level == logging.NOTSET:
        # aiormq logs every failed connect and lost connection with a traceback; chute reports them
        # itself (as BrokerUnavailable), so these speak only if the application asked them to (as pika)
        logging.getLogger(_name).setLevel(logging.CRITICAL)

# what a lost or unreachable server looks like from aio-pika/aiormq: retried, then BrokerUnavailable
LOST = (aiormq.exceptions.AMQPConnectionError, aiormq.exceptions.ChannelInvalidStateError, ConnectionError,
        OSError, asyncio.TimeoutError)


class _LoopLink:
    """An aio-pika connection and its confirming channel, bound to one event loop."""

    def __init__(self, connection: aio_pika.abc.AbstractConnection, channel: aio_pika.abc.AbstractChannel) -> None:
        self.connection, self.channel = connection, channel
        self.keeper: AsyncIterator[None] | None = None
        self.batches: bool | None = None  # whether _publish_batch can drive this channel (known on first use)
        self.methods: dict[tuple[str, str], bytes] = {}  # marshalled basic.publish frames, per (exchange, key)

    @property
    def usable(self) -> bool:
        return not self.connection.is_closed and not self.channel.is_closed


class AsyncAMQP:
    """`publish` of one AMQPBroker, for coroutines."""

    def __init__(self, broker: AMQPBroker) -> None:
        self._broker = broker
        self._links: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopLink] = weakref.WeakKeyDictionary()

    async def _link(self, timeout: float) -> _LoopLink:
        loop = asyncio.get_running_loop()
        link = self._links.get(loop)
        if link is not None and link.usable:
            return link
        if link is not None:
            await self._drop(loop, link)
        p = self._broker._params
        ssl = p.ssl_options is not None
        url = aio_pika.connection.make_url(
            host=p.host, port=p.port, login=p.credentials.username, password=p.credentials.password,
            virtualhost=p.virtual_host, ssl=ssl, heartbeat=int(p.heartbeat or 30))
        connection = aio_pika.Connection(url, client_properties={"connection_name": "chute asyncio producer"})
        try:
            await connection.connect(timeout=max(0.1, timeout))
            channel = await connection.channel(publisher_confirms=True, on_return_raises=False)
        except BaseException:
            await connection.close()  # closed here, on its loop: not left for the GC (aio_pika.connect would)
            raise
        link = self._links[loop] = _LoopLink(connection, channel)
        link.keeper = self._keep(loop, link)
        await anext(link.keeper)  # registered with the loop now: finalised at its shutdown
        return link

    async def _keep(self, loop: asyncio.AbstractEventLoop, link: _LoopLink) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if self._links.get(loop) is link:
                self._links.pop(loop, None)
            try:
                await link.connection.close()
            except Exception:  # already lost: nothing to close
                pass

    async def _drop(self, loop: asyncio.AbstractEventLoop, link: _LoopLink) -> None:
        self._links.pop(loop, None)
        if link.keeper is not None:
            await cast(Any, link.keeper).aclose()

    async def aclose(self) -> None:
        """Close the running loop's connection (other loops close theirs when they shut down)."""
        loop = asyncio.get_running_loop()
        link = self._links.get(loop)
        if link is not None:
            await self._drop(loop, link)

    def close(self) -> None:
        """From sync code: ask every loop still running elsewhere to close its connection."""
        for loop, link in list(self._links.items()):
            if link.keeper is not None and loop.is_running() and not loop.is_closed():
                asyncio.run_coroutine_threadsafe(cast(Any, link.keeper).aclose(), loop)

    # -- producing -----------------------------------------------------------------------------
    async def publish(self, messages: Sequence[Outgoing]) -> list[str]:
        b = self._broker
        if not messages:
            return []
        drops: dict[str, int] = {}
        if b._is_plain(messages):
            ids, todo = [m.id for m in messages], list(messages)
            await self._mark_queued([m for m in todo if m.topic is None])
        else:  # a first use of a queue or level, an idempotency key, a limit: the sync side, on a thread
            ids, todo, drops = await asyncio.to_thread(b._before_send, messages)
        if todo:
            await self._send(todo)
            if drops:
                await asyncio.to_thread(b._after_send, drops)
        return ids

    async def _mark_queued(self, messages: Sequence[Outgoing]) -> None:
        """The sync side's `_mark_queued`, natively where the result store has an asyncio twin."""
        if not messages:
            return
        store = self._broker._results()
        records = queued_marks(messages)
        if store.aio is not None:
            await store.aio.queued(records)
        else:
            await asyncio.to_thread(store.queued, records)

    async def _send(self, messages: Sequence[Outgoing]) -> None:
        """Publish every frame, then await every confirm; on a lost connection, resend what was not
        confirmed on a new one until the deadline (a message may then be stored twice, never dropped)."""
        b = self._broker
        if b._consumer is not None:
            b._consumer.unsynced = True  # a fetch right after must see these arrive
        now = time.time()
        frames: list[tuple[str, str, bytes, Any]] = []
        for start in range(0, len(messages), CHUNK):  # a big grouped batch: let the loop breathe between chunks
            if start:
                await asyncio.sleep(0)
            frames += [b._frame(m, now) for m in messages[start:start + CHUNK]]
        deadline = time.monotonic() + REQUEST_TIMEOUT
        pending = list(range(len(frames)))
        nacked = 0
        returned: list[tuple[dict[str, Any] | None, Any]] = []
        pause = 0.05
        while True:
            try:
                link = await self._link(deadline - time.monotonic())
                outcomes = await asyncio.wait_for(self._publish(link, [frames[i] for i in pending]),
                                                  max(0.1, deadline - time.monotonic()))
            except (aiormq.exceptions.AuthenticationError, aiormq.exceptions.ProbableAuthenticationError) as exc:
                raise BrokerError(f"RabbitMQ at {b.url} refused the connection ({type(exc).__name__}: {exc}); "
                                  "check the URL's user, password and vhost") from None
            except LOST as exc:
                outcomes = [exc] * len(pending)
            again = []
            for i, outcome in zip(pending, outcomes, strict=True):
                if isinstance(outcome, aiormq.abc.DeliveredMessage):  # basic.return: unroutable
                    props = outcome.header.properties
                    returned.append((props.headers, props.message_id))
                elif isinstance(outcome, aiormq.exceptions.DeliveryError):  # basic.nack
                    nacked += 1
                elif isinstance(outcome, aiormq.exceptions.ChannelClosed):  # the server refused (404, 406, …)
                    await self._forget_link()
                    raise BrokerError(f"RabbitMQ at {b.url} refused: {outcome}") from None
                elif isinstance(outcome, LOST):
                    again.append(i)  # no confirm came: send it again on a new connection
                elif isinstance(outcome, BaseException):
                    raise outcome
            if not again:
                break
            await self._forget_link()
            if time.monotonic() + pause >= deadline:
                raise BrokerUnavailable(f"RabbitMQ at {b.url} is unreachable; {len(again)} of {len(frames)} "
                                        "message(s) not confirmed (some may have been stored), try again when it "
                                        "is back")
            pending = again
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)
        b._confirmed(len(frames), nacked, returned)

    async def _publish(self, link: _LoopLink, frames: Sequence[tuple[str, str, bytes, Any]]) -> list[Any]:
        """Each frame's outcome: a Basic.Ack, a returned message, or the exception its publish raised."""
        channel = await link.channel.get_underlay_channel()
        if link.batches is None:
            link.batches = _can_batch(channel)
        if link.batches:
            return await _publish_batch(channel, link.methods, frames)
        sends = [channel.basic_publish(body, exchange=exchange, routing_key=key, mandatory=True,
                                       properties=_properties(props))
                 for exchange, key, body, props in frames]
        return list(await asyncio.gather(*sends, return_exceptions=True))

    async def _forget_link(self) -> None:
        loop = asyncio.get_running_loop()
        link = self._links.get(loop)
        if link is not None:
            try:
                await self._drop(loop, link)
            except Exception:
                pass


def _properties(props: Any) -> aiormq.spec.Basic.Properties:
    """pika's BasicProperties (AMQPBroker._frame) as aiormq's."""
    return aiormq.spec.Basic.Properties(delivery_mode=props.delivery_mode, message_id=props.message_id,
                                        priority=props.priority, headers=props.headers)


CHUNK = 32  # messages written at once by _publish_batch, before the loop may run anything else
_BATCH_ATTRS = ("lock", "delivery_tag", "confirmations", "message_id_delivery_tag", "write_queue", "number",
                "create_future", "_split_body", "max_content_size")


def _can_batch(channel: Any) -> bool:
    return bool(getattr(channel, "publisher_confirms", False)) and all(hasattr(channel, a) for a in _BATCH_ATTRS)


async def _publish_batch(channel: Any, methods: dict[tuple[str, str], bytes],
                         frames: Sequence[tuple[str, str, bytes, Any]]) -> list[Any]:
    """The frames of a batch in a few writes, then every confirm awaited.

    aiormq's `basic_publish` costs a task, a lock, a queue put, a socket write and a registered
    future per message (about 0.17 ms of the loop's time each, measured, against pika's 0.03 ms);
    this writes CHUNK messages at once with the channel's own bookkeeping (delivery tags, the
    message id for basic.return), so that aiormq's reader settles these confirms and returns as its
    own, and awaits one future per chunk (`_Chunk`). Between chunks the loop runs other work: a
    grouped batch of hundreds never holds it for more than a chunk (~2 ms). Used only where the
    channel has that bookkeeping (`_can_batch`; aiormq 7, which aio-pika 10 requires); elsewhere
    each message goes through `basic_publish`."""
    chunks: list[asyncio.Future[list[Any]]] = []
    sizes: list[int] = []
    for start in range(0, len(frames), CHUNK):
        if start:
            await asyncio.sleep(0)
        part = frames[start:start + CHUNK]
        chunks.append(await _write_chunk(channel, methods, part))
        sizes.append(len(part))
    outcomes: list[Any] = []
    for got, n in zip(await asyncio.gather(*chunks, return_exceptions=True), sizes, strict=True):
        outcomes += [got] * n if isinstance(got, BaseException) else got  # a lost channel fails the chunk
    return outcomes


class _Chunk:
    """The confirms of one written chunk, gathered into one future (registered with the channel, so
    a lost connection fails it) that resolves when the last message's outcome is in."""

    __slots__ = ("channel", "future", "ids", "left", "outcomes", "tags")

    def __init__(self, channel: Any, size: int) -> None:
        self.channel = channel
        self.future: asyncio.Future[list[Any]] = channel.create_future()
        self.outcomes: list[Any] = [None] * size
        self.ids: list[str] = []
        self.tags: list[int] = []
        self.left = size
        self.future.add_done_callback(self._forget_ids)

    def record(self, index: int, outcome: Any) -> None:
        if self.outcomes[index] is not None or self.future.done():
            return
        self.outcomes[index] = outcome
        self.left -= 1
        if not self.left:
            self.future.set_result(self.outcomes)

    def _forget_ids(self, _: object) -> None:
        known = self.channel.message_id_delivery_tag
        for message_id, tag in zip(self.ids, self.tags, strict=True):
            if known.get(message_id) == tag:
                del known[message_id]


class _Confirm:
    """Stands in `channel.confirmations` for one message's future: what aiormq's reader calls on a
    confirmation (done, cancelled, set_result, set_exception) goes to the message's place in its chunk."""

    __slots__ = ("chunk", "index")

    def __init__(self, chunk: _Chunk, index: int) -> None:
        self.chunk, self.index = chunk, index

    def done(self) -> bool:
        return self.chunk.outcomes[self.index] is not None or self.chunk.future.done()

    def cancelled(self) -> bool:
        return self.chunk.future.cancelled()

    def set_result(self, value: Any) -> None:  # a Basic.Ack, or the returned message (basic.return)
        self.chunk.record(self.index, value)

    def set_exception(self, exc: BaseException) -> None:  # a basic.nack (DeliveryError)
        self.chunk.record(self.index, exc)


_HEADER = struct.Struct(">BHIHHQHBBB")  # frame type, channel, size; class, weight, body size, flags; 3 properties
_BODY = struct.Struct(">BHI")
_PLAIN_FLAGS = 0x1000 | 0x0800 | 0x0080  # delivery-mode, priority, message-id (AMQP 0-9-1 basic properties)


def _plain_content(channel: int, body: bytes, delivery_mode: int, priority: int, message_id: str) -> bytes:
    """The content header and body frames of a message whose only properties are delivery mode,
    priority and message id, and whose body fits one frame: what pamqp marshals for it (a test
    compares them), in a fraction of its time (pamqp encodes property by property)."""
    mid = message_id.encode()
    header = _HEADER.pack(2, channel, 17 + len(mid), 60, 0, len(body), _PLAIN_FLAGS, delivery_mode, priority,
                          len(mid))
    return b"".join((header, mid, b"\xce", _BODY.pack(3, channel, len(body)), body, b"\xce"))


async def _write_chunk(channel: Any, methods: dict[tuple[str, str], bytes],
                       frames: Sequence[tuple[str, str, bytes, Any]]) -> asyncio.Future[list[Any]]:
    parts: list[bytes] = []
    chunk = _Chunk(channel, len(frames))
    number = channel.number
    async with channel.lock:  # tags in the order the frames are written
        first = channel.delivery_tag
        try:
            for index, (exchange, key, body, props) in enumerate(frames):
                channel.delivery_tag += 1
                tag, message_id = channel.delivery_tag, props.message_id
                channel.confirmations[tag] = _Confirm(chunk, index)
                channel.message_id_delivery_tag[message_id] = tag
                chunk.ids.append(message_id)
                chunk.tags.append(tag)
                method = methods.get((exchange, key))
                if method is None:  # the same few (exchange, routing key) pairs: marshalled once
                    if len(methods) > 4096:
                        methods.clear()
                    method = methods[(exchange, key)] = pamqp.frame.marshal(
                        aiormq.spec.Basic.Publish(exchange=exchange, routing_key=key, mandatory=True), number)
                parts.append(method)
                if props.headers is None and props.priority is not None and 0 < len(body) < channel.max_content_size:
                    parts.append(_plain_content(number, body, props.delivery_mode, props.priority, message_id))
                else:
                    parts.append(pamqp.frame.marshal(
                        ContentHeader(properties=_properties(props), body_size=len(body)), number))
                    parts.extend(pamqp.frame.marshal(b, number) for b in channel._split_body(body))
            await channel.write_queue.put(ChannelFrame(payload=b"".join(parts), should_close=False))
        except BaseException:  # nothing of this chunk was written: its tags are free again
            for tag in range(first + 1, channel.delivery_tag + 1):
                channel.confirmations.pop(tag, None)
            chunk.future.cancel()
            channel.delivery_tag = first
            raise
    return chunk.future
