"""The Queue side of the Redis broker: publish, fetch under a lease, settle, and the dead-letter queues,
each one script (scripts.py) over the keys of keys.py."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from ...results import ResultRecord
from ...topics import group_queue
from ..base import DeadLetter, Delivery, Outgoing, QueueStats
from ..shared import fan_out, unrouted_key
from .connect import guarded
from .keys import Keys
from .plan import BLOCK_CHUNK, due_ms, is_lone_enqueue, ms, publish_call, publish_reply, store_call, subscriptions
from .server import Call, Server

GROUP = "chute"  # the consumer group every stream is read through


def _consumer() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _per_queue(deliveries: Sequence[Delivery]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(deliveries):
        groups.setdefault(d.queue, []).append(i)
    return groups


class RedisQueue:
    """Streams with a consumer group, one per (queue, priority band); RedisBroker's queue half."""

    url: str
    keys: Keys
    _server: Server
    _known: set[str]  # queues this process has registered (`keys.queues`); shared with the asyncio side
    _enqueue_command: Callable[[Outgoing], bytes]  # plan.EnqueuePacker.pack

    # -- producing -----------------------------------------------------------------------------
    @guarded
    def publish(self, messages: Sequence[Outgoing]) -> list[str]:
        if not messages:
            return []
        s = self._server
        if is_lone_enqueue(self._known, messages):  # the one-by-one fast path: XADD + QUEUED mark
            m = messages[0]
            if s.lean.call_packed(self._enqueue_command(m)) is None:  # the general path: retries, reloads
                s.enqueue([self.keys.stream(m.queue, m.priority), self.keys.record(m.id)], [m.id, m.body, m.queue])
            return [m.id]
        plan: list[int | str] = list(range(len(messages)))
        if any(m.topic is not None for m in messages):
            subs = cast(list[bytes], s.redis.hkeys(self.keys.subs))
            messages, plan, unrouted = fan_out(messages, subscriptions(subs))
            for topic in unrouted:  # counted, not an error
                s.redis.hincrby(self.keys.meta, unrouted_key(topic), 1)
            if not messages:
                return [str(x) for x in plan]
        self._remember({m.queue for m in messages})
        call = publish_call(self.keys, messages)  # over the lean sockets: hiredis packs its many arguments in C
        return publish_reply(s.run(s.publish, call.keys, call.args), call, plan)

    @guarded
    def declare_group(self, group: str, patterns: Sequence[str]) -> None:
        if patterns:
            self._server.redis.hset(self.keys.subs, mapping={f"{group}\n{p}": 1 for p in patterns})
            self._remember({group_queue(group)})

    def _remember(self, queues: set[str]) -> None:
        new = queues - self._known
        if new:  # the registry of queue names, for stats and the CLI: once per queue and process
            self._server.redis.sadd(self.keys.queues, *sorted(new))
            self._known |= new

    # -- consuming -----------------------------------------------------------------------------
    @guarded
    def fetch(self, queues: Sequence[str], limit: int, lease: float, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        s, k = self._server, self.keys
        keys = [key for q in queues for key in k.queue(q)]
        while True:
            token = os.urandom(8).hex()
            now, next_due, got, last = s.run(s.fetch, keys, [GROUP, _consumer(), limit, ms(lease), token,
                                                             k.record_head])
            if got:
                return [Delivery(queues[q], mid.decode(), body, token, int(n), tag.decode(), cancelled == 1)
                        for q, tag, mid, body, n, cancelled in got]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            block = min(remaining, BLOCK_CHUNK)
            if next_due >= 0:
                block = min(block, max(0.0, (next_due - now) / 1000))
            streams = dict(zip((key for q in queues for key in k.streams(q)), last, strict=True))
            s.redis.xread(cast(Any, streams), count=1, block=ms(block))  # sleeps in Redis until a publish or `block`

    @guarded
    def ack(self, deliveries: Sequence[Delivery], results: Sequence[ResultRecord] = ()) -> int:
        """Acknowledge; with `results`, write them first in the same pipeline (one round trip)."""
        if not deliveries and not results:
            return 0
        s = self._server
        groups = _per_queue(deliveries)
        calls: list[Call] = [(s.store, *store_call(self.keys, results))] if results else []
        for queue, idx in groups.items():
            args: list[Any] = [GROUP]
            for i in idx:
                args += [str(deliveries[i].tag), deliveries[i].claim]
            calls.append((s.ack, self.keys.queue(queue), args))
        replies = s.batch(calls)
        return sum(int(n) for n in replies[len(replies) - len(groups):])

    @guarded
    def nack(self, delivery: Delivery, body: bytes, retry_at: float) -> bool:
        d = delivery
        return bool(self._server.nack(self.keys.queue(d.queue), [GROUP, str(d.tag), d.claim, d.id, body,
                                                                 due_ms(retry_at)]))

    @guarded
    def release(self, deliveries: Sequence[Delivery]) -> int:
        n = 0
        for queue, idx in _per_queue(deliveries).items():
            args: list[Any] = [GROUP]
            for i in idx:
                d = deliveries[i]
                args += [str(d.tag), d.claim, d.id, d.body]
            n += int(self._server.release(self.keys.queue(queue), args))
        return n

    @guarded
    def dead_letter(self, delivery: Delivery, reason: str, body: bytes | None = None) -> bool:
        d = delivery
        return bool(self._server.dead(self.keys.queue(d.queue), [GROUP, str(d.tag), d.claim, d.id,
                                                                 d.body if body is None else body, reason]))

    @guarded
    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        if not deliveries:
            return []
        held = [False] * len(deliveries)
        groups = _per_queue(deliveries)
        calls: list[Call] = []
        for queue, idx in groups.items():
            args: list[Any] = [GROUP, ms(lease)]
            for i in idx:
                args += [str(deliveries[i].tag), deliveries[i].claim]
            calls.append((self._server.extend, self.keys.queue(queue), args))
        for idx, got in zip(groups.values(), self._server.batch(calls), strict=True):
            for i, ok in zip(idx, got, strict=True):
                held[i] = bool(ok)
        return held

    # -- operating -----------------------------------------------------------------------------
    def _queues(self, queue: str | None = None) -> list[str]:
        if queue is not None:
            return [queue]
        return sorted(cast(bytes, q).decode() for q in self._server.redis.smembers(self.keys.queues))

    @guarded
    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        s = self._server
        names = sorted(set(queues)) if queues is not None else self._queues()
        got = s.batch([(s.stats, self.keys.queue(q), []) for q in names]) if names else []
        return [QueueStats(q, *map(int, counts)) for q, counts in zip(names, got, strict=True)]

    @guarded
    def dead_letters(self, queue: str | None = None, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        names = self._queues(queue)
        pipe = self._server.redis.pipeline(transaction=False)
        for q in names:
            pipe.xrange(self.keys.dead(q), count=offset + limit)
        found: list[tuple[int, int, DeadLetter]] = []
        for q, entries in zip(names, pipe.execute(), strict=True):
            for n, (_, f) in enumerate(entries):
                at = int(f.get(b"at", 0))
                found.append((at, n, DeadLetter(q, f.get(b"id", b"").decode(), f.get(b"body", b""),
                                                f.get(b"reason", b"").decode(errors="replace"), at / 1000)))
        found.sort(key=lambda x: (x[0], x[1]))
        return [d for _, _, d in found[offset:offset + limit]]

    def _move_dead(self, replay: bool, queue: str | None, ids: Sequence[str] | None) -> int:
        flags = ["1" if replay else "0", "1" if ids is None else "0", self.keys.prefix]
        return sum(int(self._server.dead_move(self.keys.queue(q), [*flags, q, *(ids or ())]))
                   for q in self._queues(queue))

    @guarded
    def replay(self, queue: str | None = None, ids: Sequence[str] | None = None) -> int:
        return self._move_dead(True, queue, ids)

    @guarded
    def purge_dead(self, queue: str | None = None, ids: Sequence[str] | None = None) -> int:
        return self._move_dead(False, queue, ids)
