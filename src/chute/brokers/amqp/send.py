"""The sync publish driver: a publish planned by publish.py, sent on pika with one confirm wait per batch,
and what RabbitMQ cannot do itself done around it (idempotency claims, max_length, QUEUED marks)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from ...errors import QueueFull
from ..base import Outgoing
from ..shared import translated, unrouted_key
from .books import Books
from .links import CONNECTION_ERRORS, Link, Pool
from .publish import Deadline, Frame, Returned, frame, judge, limits, need, unconfirmed
from .topology import Topology
from .translate import translate

Counts = Callable[[], tuple[dict[str, int], dict[str, int]]]  # per queue: (under a lease, prefetched)


class Sender:
    """Publishes for one broker; its asyncio driver (aio.py) sends the same frames and uses the rest."""

    def __init__(self, pool: Pool, topology: Topology, books: Books, url: str, counts: Counts,
                 sending: Callable[[], None]) -> None:
        self.url, self.pool, self.topology, self.books = url, pool, topology, books
        self._counts = counts  # what this process's consumers and every other worker hold
        self.sending = sending  # called before frames go out: a fetch right after must see them arrive

    def publish(self, messages: Sequence[Outgoing]) -> list[str]:
        ids, todo, drops = self.before(messages)
        if todo:
            self.send([frame(m, time.time()) for m in todo])
            self.after(drops)
        return ids

    def is_plain(self, messages: Sequence[Outgoing]) -> bool:
        """True if publishing these needs nothing but their QUEUED marks and frames: a bound store, no
        idempotency key, no max_length, every queue, delay level and exchange declared by this process."""
        now = time.time()
        lacks = self.topology.lacks
        return self.books.bound is not None and not any(
            m.idempotency_key is not None or m.max_length is not None or lacks(*need(m, now)) for m in messages)

    @translated(translate)
    def before(self, messages: Sequence[Outgoing]) -> tuple[list[str], list[Outgoing], dict[str, int]]:
        """What a publish does before its frames go out: claim idempotency keys, declare what these
        messages need, check max_length, write the QUEUED marks. Returns the id of each message, the
        messages still to send and the queues to trim afterwards (on_full="drop_oldest", their limits)."""
        ids: list[str] = []
        todo: list[Outgoing] = []
        for m in messages:
            held = self.books.claim_key(m) if m.idempotency_key is not None and m.topic is None else None
            ids.append(held or m.id)
            if held is None:
                todo.append(m)
        if not todo:
            return ids, [], {}
        room, drops = limits(todo)
        with self.pool.link() as link:
            self.prepare(link, todo)
            for queue, (limit, adding) in room.items():
                self._check_room(link, queue, limit, adding)
        self.books.mark_queued([m for m in todo if m.topic is None])
        return ids, todo, drops

    @translated(translate)
    def after(self, drops: dict[str, int]) -> None:
        """Trim the queues published to with on_full="drop_oldest" back to their limits."""
        if drops:
            with self.pool.link() as link:
                for queue, limit in drops.items():
                    self._drop_oldest(link, queue, limit)

    def prepare(self, link: Link, messages: Sequence[Outgoing]) -> None:
        """Declare, once per process, every queue, delay level or exchange these messages need."""
        now = time.time()
        self.declare(link, [need(m, now) for m in messages])

    def declare(self, link: Link, needs: Iterable[tuple[str | None, int]]) -> None:
        """Declare what is needed (`publish.need`) and not declared yet."""
        ch = None
        for queue, level in needs:
            if self.topology.lacks(queue, level):
                ch = ch or link.admin()
                self.topology.declare(ch, queue, level)

    def send(self, frames: Sequence[Frame]) -> None:
        """Publish and wait for every confirm, trying again on a new connection until the deadline."""
        self.sending()
        deadline = Deadline(time.monotonic())
        while True:
            try:
                with self.pool.link() as link:
                    nacked, returned = link.publish(frames, deadline.left(time.monotonic()))
                break
            except CONNECTION_ERRORS as exc:
                pause = deadline.pause(time.monotonic())
                if pause is None:
                    raise unconfirmed(self.url, len(frames), len(frames), exc) from None
                time.sleep(pause)
        self.confirmed(len(frames), len(nacked), returned)

    def confirmed(self, sent: int, nacked: int, returned: Sequence[Returned]) -> None:
        """Act on what the confirms said (`publish.judge`): count unrouted events, raise for the rest."""
        judged = judge(sent, nacked, returned)
        for topic in judged.unrouted:
            self.books.store().add_meta(unrouted_key(topic), 1)
        if judged.forget:
            self.topology.forget()
        if judged.error is not None:
            raise judged.error

    def _check_room(self, link: Link, queue: str, limit: int, adding: int) -> None:
        waiting = self._waiting(link, queue)
        if waiting + adding > limit:
            raise QueueFull(f"queue {queue!r} is full: {waiting} waiting, limit {limit} (on_full='reject'); "
                            "nothing was enqueued")

    def _drop_oldest(self, link: Link, queue: str, limit: int) -> None:
        ch = link.admin()
        excess = self._waiting(link, queue) - limit
        dropped = 0
        gone: list[str] = []
        while dropped < excess:
            method, props, _ = ch.basic_get(queue, auto_ack=True)  # the head: the oldest of the highest priority
            if method is None:
                break
            dropped += 1
            if props.message_id:
                gone.append(str(props.message_id))
        if dropped:
            store = self.books.store()
            store.forget_queued(gone)  # never to run: unknown, as on the other brokers
            store.add_meta(f"chute.dropped:{queue}", dropped)

    def _waiting(self, link: Link, queue: str) -> int:
        """Ready (on the server or prefetched by a consumer) plus delayed."""
        return self.topology.ready(link, queue) + self._counts()[1].get(queue, 0) + self.topology.delayed(link, queue)
