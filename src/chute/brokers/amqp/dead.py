"""The RabbitMQ broker's dead letters: each work queue's `chute.dead.<queue>`, listed by browsing it
(take without acking, then give everything back in order), replayed or purged by id or all at once."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ...results import ResultRecord
from ...states import State
from ..base import DeadLetter, Outgoing
from ..shared import QUEUED_TTL
from .links import Link
from .publish import H_DEAD_AT, H_REASON, frame, text
from .send import Sender
from .topology import dead_queue


def letter(queue: str, props: Any, body: bytes) -> DeadLetter:
    """A dead letter as chute wrote it (reason headers), or as RabbitMQ dead-lettered it (x-death)."""
    headers = props.headers or {}
    reason, at = headers.get(H_REASON), headers.get(H_DEAD_AT)
    if isinstance(at, int):
        at = at / 1000  # written in ms: AMQP headers carry no floats
    if reason is None:
        deaths = headers.get("x-death") or [{}]
        death = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
        reason = f"rabbitmq_{text(death.get('reason', 'dead_lettered'))}: by RabbitMQ from queue " \
                 f"{text(death.get('queue', queue))}"
        stamp: Any = death.get("time")  # an aware datetime, as pika decodes AMQP timestamps
        at = stamp.timestamp() if hasattr(stamp, "timestamp") else stamp
    return DeadLetter(queue, str(props.message_id or ""), body, text(reason),
                      float(at) if isinstance(at, (int, float)) else 0.0)


class DeadLetters:
    """Listing, replaying and purging the dead-letter queues of every known work queue."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender
        self._topology = sender.topology

    def letters(self, queue: str | None, limit: int, offset: int) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        with self._sender.pool.link() as link:
            for q in self._topology.queues(queue):
                browsed = self._browse(link, q, offset + limit)
                self._end_browse(link, q, [])
                found += [d for _, d, _ in browsed]
        found.sort(key=lambda d: d.dead_at)  # stable: each queue's own order is kept
        return found[offset:offset + limit]

    def move(self, queue: str | None, ids: Sequence[str] | None, replay: bool) -> int:
        """Replay (back to their queues, due now) or purge the dead letters named; return how many."""
        wanted = None if ids is None else set(ids)
        moved = 0
        for q in self._topology.queues(queue):
            with self._sender.pool.link() as link:
                if wanted is None and not replay:
                    if self._topology.count(link, dead_queue(q)) is not None:
                        moved += int(link.admin().queue_purge(dead_queue(q)).method.message_count)
                    continue
                # all: in chunks, only the letters there now (a replayed task that fails again while we
                # work is a new letter, not replayed twice); by ids: in one pass
                left = 1 << 30 if wanted is not None else self._topology.count(link, dead_queue(q)) or 0
                while left > 0:
                    browsed = self._browse(link, q, left if wanted is not None else min(500, left))
                    chosen = [(tag, d, props) for tag, d, props in browsed if wanted is None or d.id in wanted]
                    if replay and chosen:
                        self._replay(link, [Outgoing(q, d.id, d.body, int(props.priority or 0))
                                            for _, d, props in chosen])
                    self._end_browse(link, q, [tag for tag, _, _ in chosen])
                    moved += len(chosen)
                    left = 0 if wanted is not None or not browsed else left - len(browsed)
        return moved

    def _replay(self, link: Link, outs: list[Outgoing]) -> None:
        now = time.time()  # a DEAD record would answer get() with the old failure
        self._sender.books.store().store([ResultRecord(o.id, State.QUEUED, queue=o.queue, updated_at=now,
                                                       expires_at=now + QUEUED_TTL) for o in outs])
        self._sender.prepare(link, outs)
        self._sender.send([frame(o, time.time()) for o in outs])

    def _browse(self, link: Link, queue: str, limit: int) -> list[tuple[int, DeadLetter, Any]]:
        """Take up to `limit` dead letters of `queue` without acking them: (delivery tag, letter, props)."""
        ch = link.admin()
        out: list[tuple[int, DeadLetter, Any]] = []
        if self._topology.count(link, dead_queue(queue)) is None:
            return out
        while len(out) < limit:
            method, props, body = ch.basic_get(dead_queue(queue), auto_ack=False)
            if method is None:
                break
            out.append((method.delivery_tag, letter(queue, props, body), props))
        return out

    def _end_browse(self, link: Link, queue: str, remove: Sequence[int]) -> None:
        """Ack the browsed letters in `remove`, give the rest back in their order, and wait until the
        queue has done both (a passive declare is answered after them)."""
        ch = link.admin()
        for tag in remove:
            ch.basic_ack(tag)
        ch.basic_nack(0, multiple=True, requeue=True)
        ch.queue_declare(dead_queue(queue), passive=True)
