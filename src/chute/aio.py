"""Grouped publishing for asyncio code: concurrent sends of one event loop share broker round trips.

While one batch is being written, the sends that arrive wait and go together in the next one, so N
concurrent `delay_async` calls cost about one transaction (SQLite, on a thread) or one script call
(Redis, natively) instead of N: group commit, which keeps the loop free at thousands of sends a
second. Each caller still gets its own outcome: if a grouped batch fails, its parts are retried
one by one. A lone send goes at once, in a batch of one.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Sequence

from .brokers.base import Outgoing

Publish = Callable[[list[Outgoing]], Awaitable[list[str]]]


class GroupPublisher:
    """Groups the publishes of one event loop into calls of `publish` (awaitable, all or nothing)."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish
        self._pending: list[tuple[list[Outgoing], asyncio.Future[list[str]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def publish(self, outs: Sequence[Outgoing]) -> list[str]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[str]] = loop.create_future()
        self._pending.append((list(outs), fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
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


def _settle(fut: asyncio.Future[list[str]], ids: list[str] | None = None, exc: BaseException | None = None) -> None:
    if fut.done():  # its caller was cancelled; what was sent stays sent
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(ids or [])


class Publishers:
    """One GroupPublisher per event loop (an App may be used from several, one after another)."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupPublisher] = \
            weakref.WeakKeyDictionary()

    async def publish(self, outs: Sequence[Outgoing]) -> list[str]:
        loop = asyncio.get_running_loop()
        group = self._loops.get(loop)
        if group is None:
            group = self._loops[loop] = GroupPublisher(self._publish)
        return await group.publish(outs)
