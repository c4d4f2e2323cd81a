"""Publishing a batch on aiormq's channel in a few socket writes: what makes the asyncio side about as
cheap per message as pika on a thread (docs/benchmarks.md). aio.py falls back to aiormq's own
`basic_publish` where the channel lacks the bookkeeping this relies on (`can_batch`)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from typing import Any

import aiormq
import pamqp.frame
from aiormq.abc import ChannelFrame
from pamqp.header import ContentHeader

from .publish import Frame


def properties(props: Any) -> aiormq.spec.Basic.Properties:
    """pika's BasicProperties (of a `publish.frame`) as aiormq's."""
    return aiormq.spec.Basic.Properties(delivery_mode=props.delivery_mode, message_id=props.message_id,
                                        priority=props.priority, headers=props.headers)


CHUNK = 32  # messages written at once by publish_batch, before the loop may run anything else
_BATCH_ATTRS = ("lock", "delivery_tag", "confirmations", "message_id_delivery_tag", "write_queue", "number",
                "create_future", "_split_body", "max_content_size")


def can_batch(channel: Any) -> bool:
    return bool(getattr(channel, "publisher_confirms", False)) and all(hasattr(channel, a) for a in _BATCH_ATTRS)


async def publish_batch(channel: Any, methods: dict[tuple[str, str], bytes],
                         frames: Sequence[Frame]) -> list[Any]:
    """The frames of a batch in a few writes, then every confirm awaited.

    aiormq's `basic_publish` costs a task, a lock, a queue put, a socket write and a registered
    future per message (about 0.17 ms of the loop's time each, measured, against pika's 0.03 ms);
    this writes CHUNK messages at once with the channel's own bookkeeping (delivery tags, the
    message id for basic.return), so that aiormq's reader settles these confirms and returns as its
    own, and awaits one future per chunk (`_Chunk`). Between chunks the loop runs other work: a
    grouped batch of hundreds never holds it for more than a chunk (~2 ms). Used only where the
    channel has that bookkeeping (`can_batch`; aiormq 7, which aio-pika 10 requires); elsewhere
    each message goes through `basic_publish`."""
    chunks: list[asyncio.Future[list[Any]]] = []
    sizes: list[int] = []
    for start in range(0, len(frames), CHUNK):
        if start:
            await asyncio.sleep(0)
        part = frames[start:start + CHUNK]
        chunks.append(await write_chunk(channel, methods, part))
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


def plain_content(channel: int, body: bytes, delivery_mode: int, priority: int, message_id: str) -> bytes:
    """The content header and body frames of a message whose only properties are delivery mode,
    priority and message id, and whose body fits one frame: what pamqp marshals for it (a test
    compares them), in a fraction of its time (pamqp encodes property by property)."""
    mid = message_id.encode()
    header = _HEADER.pack(2, channel, 17 + len(mid), 60, 0, len(body), _PLAIN_FLAGS, delivery_mode, priority,
                          len(mid))
    return b"".join((header, mid, b"\xce", _BODY.pack(3, channel, len(body)), body, b"\xce"))


async def write_chunk(channel: Any, methods: dict[tuple[str, str], bytes],
                       frames: Sequence[Frame]) -> asyncio.Future[list[Any]]:
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
                    parts.append(plain_content(number, body, props.delivery_mode, props.priority, message_id))
                else:
                    parts.append(pamqp.frame.marshal(
                        ContentHeader(properties=properties(props), body_size=len(body)), number))
                    parts.extend(pamqp.frame.marshal(b, number) for b in channel._split_body(body))
            await channel.write_queue.put(ChannelFrame(payload=b"".join(parts), should_close=False))
        except BaseException:  # nothing of this chunk was written: its tags are free again
            for tag in range(first + 1, channel.delivery_tag + 1):
                channel.confirmations.pop(tag, None)
            chunk.future.cancel()
            channel.delivery_tag = first
            raise
    return chunk.future
