"""The consuming side of the RabbitMQ broker: fetches hand out buffered deliveries under a claim and a
lease kept by this process; acks, releases, retries and dead-lettering settle them, fenced by the claim.

What RabbitMQ cannot do to a delivered message (change its body, delay it, count it as not delivered)
is "publish the copy, then ack the original" (`Leases.replace`, `give_back`).
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import pika

from ...errors import ChuteError
from ...topics import GROUP_PREFIX
from ..base import Delivery, Outgoing
from .books import Books
from .consumer import Consumer, Held, Message
from .publish import H_DELIVERIES, H_ETA, H_TOPIC, Frame, dead_frame, frame, given_back, need
from .send import Sender


def deliveries_before(m: Message) -> int:
    """The deliveries a message had before this one that count against max_deliveries: those a copy
    given back carries, plus RabbitMQ's own (a quorum queue counts returns; a classic queue only
    says whether the message was delivered before)."""
    headers = m.props.headers or {}
    given = headers.get(H_DELIVERIES)
    count = headers.get("x-delivery-count")
    return (given if isinstance(given, int) else 0) + \
        (int(count) if isinstance(count, int) else (1 if m.redelivered else 0))


def id_of(m: Message) -> str:
    mid = str(m.props.message_id or "")
    if not mid:  # a plain client that set no message id: give the delivery one
        mid = f"amqp-{m.tag[0]}-{m.tag[1]}-{os.urandom(4).hex()}"
        m.props.message_id = mid
    headers = m.props.headers or {}
    if H_TOPIC in headers and m.queue.startswith(GROUP_PREFIX):  # each group's copy of an event has its own id
        return f"{mid}:{m.queue.removeprefix(GROUP_PREFIX)}"
    return mid


class Leases:
    """This process's consumer (made on the first fetch, anew after a fork) and the claims on what it holds."""

    def __init__(self, params: pika.URLParameters, books: Books, sender: Sender) -> None:
        self._params, self._books, self._sender = params, books, sender
        self.consumer: Consumer | None = None
        self._pid = os.getpid()
        self._seen: dict[str, int] = {}  # message id -> deliveries handed out by this process
        self.workers: set[str] = set()  # this process's workers

    def current(self) -> Consumer | None:
        """The consumer of this process, if it made one."""
        return self.consumer if self._pid == os.getpid() else None

    def unsync(self) -> None:
        """Something was published: a zero-timeout fetch right after must wait for it to arrive."""
        if self.consumer is not None:
            self.consumer.unsynced = True

    def _consuming(self) -> Consumer:
        if self.consumer is None or self._pid != os.getpid():
            self._pid = os.getpid()
            topology = self._sender.topology
            self.consumer = Consumer(self._params, lambda ch, q: topology.declare_queue(ch, q, force=True),
                                     self._sender.url)
            self._closer = weakref.finalize(self, self.consumer.close)  # at interpreter exit too
        return self.consumer

    # -- handing out ------------------------------------------------------------------------------
    def fetch(self, queues: Sequence[str], limit: int, lease: float, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        c = self._consuming()
        with c.io:
            if c.wants(queues, limit):
                c.consume(queues, limit)
            c.pump(0)  # whatever arrived while the caller was busy
            if timeout <= 0:  # what it returns must be all there is: let what the server owes us arrive
                if c.may_owe(queues, limit):
                    c.sync(queues)
                return self._take(c, queues, limit, lease)
            got = self._take(c, queues, limit, lease)
            while not got:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                c.pump(left)
                got = self._take(c, queues, limit, lease)
            return got

    def _take(self, c: Consumer, queues: Sequence[str], limit: int, lease: float) -> list[Delivery]:
        """Hand out up to `limit` buffered messages, highest priority first, under a new claim."""
        early: list[Message] = []
        out: list[Delivery] = []
        with c.cond:
            found = [m for q in queues for m in c.buffer.get(q, ())]
            if not found:
                return []
            found.sort(key=lambda m: (-m.priority, m.seq))
            taken = found[:limit]
            for m in taken:
                c.buffer[m.queue].remove(m)
            now, wall = time.monotonic(), time.time()
            claim = os.urandom(8).hex()
            for m in taken:
                eta = (m.props.headers or {}).get(H_ETA)
                if isinstance(eta, int) and eta / 1000 > wall + 0.002:  # beyond one pass of the delay chain
                    early.append(m)
                    c.held[m.tag] = Held(m, "", now, settling=True)  # still ours until its copy is confirmed
                    continue
                c.held[m.tag] = Held(m, claim, now + lease)
                mid = id_of(m)
                n = self._seen.get(mid)
                if n is None:
                    n = deliveries_before(m)
                self._seen[mid] = n + 1
                out.append(Delivery(m.queue, mid, m.body, claim, n + 1, m.tag))
        if early:  # send them the rest of the way, then ack
            outs = [Outgoing(m.queue, id_of(m), m.body, m.priority, int(m.props.headers[H_ETA]) / 1000) for m in early]
            with self._sender.pool.link() as link:
                self._sender.prepare(link, outs)
            now = time.time()
            self._sender.send([frame(o, now) for o in outs])
            self._settle(c, [(True, m) for m in early])
        return out

    # -- settling ---------------------------------------------------------------------------------
    def ack(self, deliveries: Sequence[Delivery]) -> int:
        c = self.consumer
        if c is None or not deliveries:
            return 0
        tags: list[tuple[bool, Any]] = []
        with c.io:  # taken out of `held` and acked in one go: a multiple ack must not cover a requeue
            with c.cond:
                for d in deliveries:
                    h = c.held.get(d.tag)
                    if h is None or h.claim != d.claim or h.settling:
                        continue
                    del c.held[d.tag]
                    tags.append((True, h.msg.tag))
                    self._seen.pop(d.id, None)
            if tags:
                c.settle(tags)
        return len(tags)

    def release(self, deliveries: Sequence[Delivery]) -> int:
        c = self.consumer
        if c is None or not deliveries:
            return 0
        back: list[tuple[Message, int]] = []
        with c.cond:
            for d in deliveries:
                h = c.held.get(d.tag)
                if h is not None and h.claim == d.claim and not h.settling:
                    h.settling = True  # ours until its copy is confirmed
                    back.append((h.msg, max(0, self._seen.pop(d.id, 1) - 1)))  # a released delivery does not count
        self.give_back(c, back)
        return len(back)

    def stopped(self, worker_id: str) -> None:
        """Our worker stopped: what we prefetched for it goes back at once."""
        c = self.current()
        if worker_id in self.workers and c is not None:
            self.give_back(c, [(m, deliveries_before(m)) for m in c.stop()])

    def give_back(self, c: Consumer, back: list[tuple[Message, int]]) -> None:
        """Requeue messages (held with `settling` set) without counting a delivery.

        RabbitMQ marks a requeued message redelivered, and the next worker would take it for the
        survivor of a crash and run it alone. So a copy that carries its count goes to the queue
        first, then the original is acked; if the copy cannot be sent, the original is requeued
        after all (a crash in between leaves both: a duplicate, never a loss).
        """
        if not back:
            return
        try:
            self._sender.send([given_back(m.queue, m.body, m.props, n) for m, n in back])
            copied = True
        except ChuteError:
            copied = False
        self._settle(c, [(copied, m) for m, _ in back])

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        c = self.consumer
        if c is None:
            return [False] * len(deliveries)
        c.service()
        due = time.monotonic() + lease
        kept: list[bool] = []
        with c.cond:
            for d in deliveries:
                h = c.held.get(d.tag)
                ok = h is not None and h.claim == d.claim
                if h is not None and ok:
                    h.deadline = due
                kept.append(ok)
        return kept

    def nack(self, delivery: Delivery, body: bytes, retry_at: float) -> bool:
        def build(h: Held) -> Outgoing:
            return Outgoing(delivery.queue, delivery.id, body, h.msg.priority, retry_at)

        return self._replace(delivery, lambda h: frame(build(h), time.time()), lambda h: need(build(h), time.time()))

    def dead_letter(self, delivery: Delivery, reason: str, body: bytes | None) -> bool:
        def copy(h: Held) -> Frame:
            return dead_frame(delivery.queue, delivery.id, delivery.body if body is None else body, h.msg.priority,
                              reason, time.time())

        return self._replace(delivery, copy, lambda h: (delivery.queue, -1))

    def _replace(self, delivery: Delivery, copy: Callable[[Held], Frame],
                 needs: Callable[[Held], tuple[str | None, int]]) -> bool:
        """Publish a copy in place of a held message (confirmed; `needs` says what it needs declared,
        as `publish.need` does), then ack the original."""
        c = self.consumer
        if c is None:
            return False
        with c.cond:
            h = c.held.get(delivery.tag)
            if h is None or h.claim != delivery.claim:
                return False
            h.settling = True  # the lease may not run out under us while we publish
        try:
            with self._sender.pool.link() as link:
                self._sender.declare(link, [needs(h)])
            self._sender.send([copy(h)])
        except BaseException:
            with c.cond:
                h.settling = False
            raise
        with c.io:
            with c.cond:
                mine = c.held.get(delivery.tag) is h
                if mine:
                    del c.held[delivery.tag]
                self._seen.pop(delivery.id, None)
            if mine:
                c.settle([(True, h.msg.tag)])
        return True

    @staticmethod
    def _settle(c: Consumer, outcomes: Sequence[tuple[bool, Message]]) -> None:
        """Take held messages out of `held` and ack (True) or requeue (False) them, in one go."""
        with c.io:
            with c.cond:
                for _, m in outcomes:
                    c.held.pop(m.tag, None)
            c.settle([(ack, m.tag) for ack, m in outcomes])

    # -- counts and shutdown ------------------------------------------------------------------------
    def beat(self, worker_id: str) -> tuple[dict[str, int], dict[str, int]]:
        c = self.current()
        if c is not None:
            c.service()  # AMQP heartbeats and lease expiry, even while the consumer thread waits
        self.workers.add(worker_id)
        return self.local_counts()

    def local_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Messages this process holds per queue: handed out under a lease, and prefetched (waiting to
        be asked for: `ready` to the application, though RabbitMQ counts them as delivered)."""
        c = self.current()
        held: dict[str, int] = {}
        prefetched: dict[str, int] = {}
        if c is None:
            return held, prefetched
        with c.cond:
            for h in c.held.values():
                held[h.msg.queue] = held.get(h.msg.queue, 0) + 1
            for q, buf in c.buffer.items():
                if buf:
                    prefetched[q] = len(buf)
        return held, prefetched

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Ours, plus what other live workers reported holding with their last heartbeat."""
        held, prefetched = self.local_counts()
        for w in self._books.store().workers():
            if w.id in self.workers:
                continue
            for mine, theirs in ((held, w.in_flight), (prefetched, w.prefetched)):
                for q, n in theirs.items():
                    mine[q] = mine.get(q, 0) + n
        return held, prefetched

    def close(self) -> None:
        if self.current() is not None:
            self._closer()
        self.consumer = None
