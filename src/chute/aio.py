"""Grouped publishing for asyncio code: concurrent sends of one event loop share broker round trips.

While one batch is being written, the sends that arrive wait and go together in the next one, so N
concurrent `delay_async` calls cost about one transaction (SQLite, on a thread) or one script call
(Redis, natively) instead of N: group commit, which keeps the loop free at thousands of sends a
second. Each caller still gets its own outcome: if a grouped batch fails, its parts are retried
one by one. A lone send goes at once, in a batch of one.

A grouped batch holds at most GROUP_LIMIT messages (a single caller's bigger batch goes whole): a
script of hundreds of messages runs for milliseconds in a Redis server that shares the machine,
and on a loopback socket the kernel runs the server on the waking CPU while the loop waits. A
broker may ask for several batches in flight (`publish_async_overlap`: RabbitMQ, whose confirms
take milliseconds each); the others send one at a time (on Redis, batches in flight at once run
back to back in the server, and the loop's lag grew with them: p99 7.4 ms with one in flight, 8.4-
10.3 ms with two or four, 8 HTTP clients at 5,000 tasks/s, benchmarks/loop_lag.py).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Sequence

from .brokers.base import Outgoing

Publish = Callable[[list[Outgoing]], Awaitable[list[str]]]


class GroupPublisher:
    """Groups the publishes of one event loop into calls of `publish` (awaitable, all or nothing),
    with up to `overlap` calls in flight at once."""

    def __init__(self, publish: Publish, overlap: int = 1) -> None:
        self._publish = publish
        self._overlap = overlap
        self._pending: list[tuple[list[Outgoing], asyncio.Future[list[str]]]] = []
        self._flushing = 0  # flushers started and not yet out of their loop
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    async def publish(self, outs: Sequence[Outgoing]) -> list[str]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[str]] = loop.create_future()
        self._pending.append((list(outs), fut))
        if self._flushing < self._overlap:
            self._flushing += 1
            flusher = loop.create_task(self._flush())
            self._tasks.add(flusher)
            flusher.add_done_callback(self._tasks.discard)
        return await fut

    async def _flush(self) -> None:
        try:
            await self._flush_pending()
        finally:  # in the step that found nothing pending: a send after it starts a flusher of its own
            self._flushing -= 1

    async def _flush_pending(self) -> None:
        while self._pending:
            batch, self._pending = _take(self._pending)
            try:
                ids = await self._publish([o for outs, _ in batch for o in outs])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc=exc)
                    continue
                for outs, fut in batch:  # one caller's bad message must not fail the others
                    try:
                        _settle(fut, await self._publish(outs))
                    except Exception as one:
                        _settle(fut, exc=one)
                continue
            start = 0
            for outs, fut in batch:
                _settle(fut, ids[start:start + len(outs)])
                start += len(outs)


GROUP_LIMIT = 64  # messages in one grouped round trip, unless a single caller's batch is bigger


def _take(pending: list[tuple[list[Outgoing], asyncio.Future[list[str]]]]
          ) -> tuple[list[tuple[list[Outgoing], asyncio.Future[list[str]]]],
                     list[tuple[list[Outgoing], asyncio.Future[list[str]]]]]:
    """The callers that go in the next round trip (the first, and those after it while the batch stays
    within GROUP_LIMIT), and the rest. A bounded batch keeps each step of the loop, and each call
    the server runs while this process waits, short."""
    total, n = len(pending[0][0]), 1
    while n < len(pending) and total + len(pending[n][0]) <= GROUP_LIMIT:
        total += len(pending[n][0])
        n += 1
    return pending[:n], pending[n:]


def _settle(fut: asyncio.Future[list[str]], ids: list[str] | None = None, exc: BaseException | None = None) -> None:
    if fut.done():  # its caller was cancelled; what was sent stays sent
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(ids or [])


class Publishers:
    """One GroupPublisher per event loop (an App may be used from several, one after another)."""

    def __init__(self, publish: Publish, overlap: int = 1) -> None:
        self._publish = publish
        self._overlap = overlap
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupPublisher] = \
            weakref.WeakKeyDictionary()

    async def publish(self, outs: Sequence[Outgoing]) -> list[str]:
        loop = asyncio.get_running_loop()
        group = self._loops.get(loop)
        if group is None:
            group = self._loops[loop] = GroupPublisher(self._publish, self._overlap)
        return await group.publish(outs)
