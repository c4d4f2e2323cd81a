"""The RabbitMQ broker's asyncio side: publish on aio-pika with publisher confirms, never blocking the loop.

It plans with publish.py, as the pika driver (send.py) does, so a message published here is the
same frame (exchange, routing key, properties, headers) as one published by `AMQPBroker.publish`.
What a publish needs besides its frames stays with the sync driver and runs on a thread when needed:
declaring a queue, delay level or exchange this process has not declared yet (once each), idempotency
claims, max_length checks. The QUEUED marks go to the App's result store natively where it has an
asyncio twin (Redis), else on a thread. Round trips: one confirm wait per batch.

aio-pika connections belong to the event loop that opened them, so each loop gets one of its own,
closed by `aclose()` or, at the latest, when the loop shuts down (as redis_async.py does).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import aio_pika
import aiormq
import aiormq.abc
import aiormq.exceptions
import pika

from ..base import Outgoing
from ..shared import queued_marks, translated
from .aio_batch import CHUNK, can_batch, properties, publish_batch
from .publish import Deadline, Frame, Returned, frame, unconfirmed
from .send import Sender
from .translate import translate

for _name in ("aiormq", "aio_pika"):
    if logging.getLogger(_name).level == logging.NOTSET:
        # aiormq logs every failed connect and lost connection with a traceback; chute reports them
        # itself (as BrokerUnavailable), so these speak only if the application asked them to (as pika)
        logging.getLogger(_name).setLevel(logging.CRITICAL)

# what a lost or unreachable server looks like from aio-pika/aiormq: retried, then BrokerUnavailable
LOST = (aiormq.exceptions.AMQPConnectionError, aiormq.exceptions.ChannelInvalidStateError, ConnectionError,
        OSError, asyncio.TimeoutError)
REFUSED = (aiormq.exceptions.AuthenticationError, aiormq.exceptions.ProbableAuthenticationError)


class _LoopLink:
    """An aio-pika connection and its confirming channel, bound to one event loop."""

    def __init__(self, connection: aio_pika.abc.AbstractConnection, channel: aio_pika.abc.AbstractChannel) -> None:
        self.connection, self.channel = connection, channel
        self.keeper: AsyncIterator[None] | None = None
        self.batches: bool | None = None  # whether publish_batch can drive this channel (known on first use)
        self.methods: dict[tuple[str, str], bytes] = {}  # marshalled basic.publish frames, per (exchange, key)

    @property
    def usable(self) -> bool:
        return not self.connection.is_closed and not self.channel.is_closed


class AsyncAMQP:
    """`publish` of one AMQPBroker's Sender, for coroutines."""

    def __init__(self, sender: Sender, params: pika.URLParameters) -> None:
        self.url = sender.url
        self._sender, self._params = sender, params
        self._links: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopLink] = weakref.WeakKeyDictionary()

    async def _link(self, timeout: float) -> _LoopLink:
        loop = asyncio.get_running_loop()
        link = self._links.get(loop)
        if link is not None and link.usable:
            return link
        if link is not None:
            await self._drop(loop, link)
        p = self._params
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
    @translated(translate)
    async def publish(self, messages: Sequence[Outgoing]) -> list[str]:
        s = self._sender
        if not messages:
            return []
        drops: dict[str, int] = {}
        if s.is_plain(messages):
            ids, todo = [m.id for m in messages], list(messages)
            await self._mark_queued([m for m in todo if m.topic is None])
        else:  # a first use of a queue or level, an idempotency key, a limit: the sync side, on a thread
            ids, todo, drops = await asyncio.to_thread(s.before, messages)
        if todo:
            await self._send(todo)
            if drops:
                await asyncio.to_thread(s.after, drops)
        return ids

    async def _mark_queued(self, messages: Sequence[Outgoing]) -> None:
        """`Books.mark_queued`, natively where the result store has an asyncio twin."""
        if not messages:
            return
        store = self._sender.books.store()
        records = queued_marks(messages)
        if store.aio is not None:
            await store.aio.queued(records)
        else:
            await asyncio.to_thread(store.queued, records)

    async def _send(self, messages: Sequence[Outgoing]) -> None:
        """Publish every frame, then await every confirm; on a lost connection, resend what was not
        confirmed on a new one until the deadline (a message may then be stored twice, never dropped)."""
        self._sender.sending()
        now = time.time()
        frames: list[Frame] = []
        for start in range(0, len(messages), CHUNK):  # a big grouped batch: let the loop breathe between chunks
            if start:
                await asyncio.sleep(0)
            frames += [frame(m, now) for m in messages[start:start + CHUNK]]
        deadline = Deadline(time.monotonic())
        pending = list(range(len(frames)))
        nacked = 0
        returned: list[Returned] = []
        while True:
            try:
                link = await self._link(deadline.left(time.monotonic()))
                outcomes = await asyncio.wait_for(self._publish(link, [frames[i] for i in pending]),
                                                  deadline.left(time.monotonic()))
            except REFUSED:
                raise  # not lost: `translate` says why
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
                    raise outcome
                elif isinstance(outcome, LOST):
                    again.append(i)  # no confirm came: send it again on a new connection
                elif isinstance(outcome, BaseException):
                    raise outcome
            if not again:
                break
            await self._forget_link()
            pause = deadline.pause(time.monotonic())
            if pause is None:
                raise unconfirmed(self.url, len(again), len(frames))
            pending = again
            await asyncio.sleep(pause)
        self._sender.confirmed(len(frames), nacked, returned)

    async def _publish(self, link: _LoopLink, frames: Sequence[Frame]) -> list[Any]:
        """Each frame's outcome: a Basic.Ack, a returned message, or the exception its publish raised."""
        channel = await link.channel.get_underlay_channel()
        if link.batches is None:
            link.batches = can_batch(channel)
        if link.batches:
            return await publish_batch(channel, link.methods, frames)
        sends = [channel.basic_publish(body, exchange=exchange, routing_key=key, mandatory=True,
                                       properties=properties(props))
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
