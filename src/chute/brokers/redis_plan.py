"""How a publish becomes one call of the Redis PUBLISH script: its keys, its arguments, and what
its reply means. Shared by the broker's sync side (redis.py) and its asyncio side (redis_async.py),
which differ only in how they send it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from ..errors import QueueFull
from .base import Outgoing
from .redis_scripts import BANDS, NKEYS

if TYPE_CHECKING:
    from .redis import RedisBroker


def band(priority: int) -> int:
    return min(BANDS - 1, max(0, int(priority)))


def due_ms(at: float) -> int:
    """A due time in whole milliseconds, rounded up: never deliver before the ETA."""
    return math.ceil(at * 1000)


def ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def is_lone_enqueue(broker: RedisBroker, messages: Sequence[Outgoing]) -> bool:
    """One plain message to a known queue: the one-by-one fast path (the ENQUEUE script)."""
    if len(messages) != 1:
        return False
    m = messages[0]
    return m.queue in broker._known and m.idempotency_key is None and m.eta is None and m.topic is None \
        and m.max_length is None


def subscriptions(fields: list[bytes]) -> list[tuple[str, str]]:
    """The subscriptions hash's fields (`group\npattern`) as (group, pattern) pairs for `shared.fan_out`."""
    return [cast(tuple[str, str], tuple(f.decode().split("\n", 1))) for f in fields]


class PublishCall(NamedTuple):
    keys: list[str]
    args: list[Any]
    order: list[str]  # the queues, in the order of their key blocks
    limits: dict[str, tuple[int | None, str]]


def publish_call(broker: RedisBroker, messages: Sequence[Outgoing]) -> PublishCall:
    """The PUBLISH script's keys and arguments (layout in redis_scripts.PUBLISH)."""
    prefix = broker.prefix
    order = list(dict.fromkeys(m.queue for m in messages))
    keys = [k for q in order for k in broker._qkeys(q)]
    base = {q: NKEYS * n for n, q in enumerate(order)}
    limits: dict[str, tuple[int | None, str]] = {m.queue: (m.max_length, m.on_full) for m in messages
                                                 if m.max_length is not None}
    args: list[Any] = [len(order)]
    for q in order:
        limit, on_full = limits.get(q, (None, "reject"))
        args += [base[q], -1 if limit is None else limit, on_full, q]
    for m in messages:
        key = 0
        if m.idempotency_key is not None:
            keys.append(f"{prefix}:{{{m.queue}}}:key:{m.idempotency_key}")
            key = len(keys)
        keys.append(broker._rkey(m.id))
        args += [base[m.queue], m.id, m.body, band(m.priority), 0 if m.eta is None else due_ms(m.eta),
                 key, ms(m.idempotency_window), len(keys)]
    keys.append(f"{prefix}:meta")
    return PublishCall(keys, args, order, limits)


def publish_reply(got: Any, call: PublishCall, plan: list[int | str]) -> list[str]:
    """The id each original message is known by, or QueueFull if a "reject" queue had no room."""
    if got and got[0] == b"full":
        queue = call.order[int(got[1]) // NKEYS]
        raise QueueFull(f"queue {queue!r} is full: {int(got[2])} waiting, limit {int(got[3])} "
                        f"(on_full={call.limits[queue][1]!r}); nothing was enqueued")
    return [got[x].decode() if isinstance(x, int) else x for x in plan]
