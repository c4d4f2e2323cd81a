"""What the Redis broker's calls say and what their replies mean, without I/O: shared by the sync driver
(queue.py, store.py) and the asyncio one (aio.py), which differ only in how they send them.

Each function takes what it needs (the key names, the queues this process has registered), never the
broker.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import msgspec

from ...errors import QueueFull
from ...results import ResultRecord
from ...states import State
from ..base import Outgoing
from .keys import NKEYS, WAITERS, Keys, band

BLOCK_CHUNK = 1.0  # seconds per XREAD/BLPOP, well under the socket timeout
STARTED_TTL_MS = 86_400_000  # a STARTED record without its own expiry
CACHED = 10_000  # (queue, band) pairs whose lone-enqueue framing is kept

encode_record = msgspec.msgpack.Encoder().encode
decode_record = msgspec.msgpack.Decoder(ResultRecord).decode


def due_ms(at: float) -> int:
    """A due time in whole milliseconds, rounded up: never deliver before the ETA."""
    return math.ceil(at * 1000)


def ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def expiry_ms(r: ResultRecord) -> int:
    """A record's expiry for the scripts: unix ms, 0 for none."""
    return 0 if r.expires_at is None else max(1, int(r.expires_at * 1000))


# -- publish ------------------------------------------------------------------------------------------
def is_lone_enqueue(known: set[str], messages: Sequence[Outgoing]) -> bool:
    """One plain message to a queue this process has registered: the one-by-one fast path (ENQUEUE)."""
    if len(messages) != 1:
        return False
    m = messages[0]
    return m.queue in known and m.idempotency_key is None and m.eta is None and m.topic is None \
        and m.max_length is None


def bulk(data: bytes) -> bytes:
    """One RESP bulk string: what hiredis's packer writes for each argument of a command."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


class EnqueuePacker:
    """`EVALSHA <ENQUEUE> 2 <stream> <record> <id> <body> <queue>` packed as hiredis would pack it, the parts
    fixed by the queue and band packed once (the packer was 12,300 of a delay()'s 67,000 instructions)."""

    def __init__(self, keys: Keys, sha: str) -> None:
        self._keys, self._sha = keys, sha.encode()
        self._ends: dict[tuple[str, int], tuple[bytes, bytes]] = {}

    def pack(self, m: Outgoing) -> bytes:
        ends = self._ends.get((m.queue, m.priority))
        if ends is None:
            stream = self._keys.stream(m.queue, m.priority).encode()
            ends = (b"*8\r\n" + bulk(b"EVALSHA") + bulk(self._sha) + bulk(b"2") + bulk(stream), bulk(m.queue.encode()))
            if len(self._ends) < CACHED:
                self._ends[(m.queue, m.priority)] = ends
        head, mid = self._keys.record_head, m.id.encode()
        return b"%b$%d\r\n%b%b}\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n%b" % (
            ends[0], len(head) + len(mid) + 1, head, mid, len(mid), mid, len(m.body), m.body, ends[1])


def subscriptions(fields: list[bytes]) -> list[tuple[str, str]]:
    """The subscriptions hash's fields (`group\npattern`) as (group, pattern) pairs for `shared.fan_out`."""
    return [cast(tuple[str, str], tuple(f.decode().split("\n", 1))) for f in fields]


class PublishCall(NamedTuple):
    keys: list[str]
    args: list[Any]
    order: list[str]  # the queues, in the order of their key blocks
    limits: dict[str, tuple[int | None, str]]


def publish_call(keys: Keys, messages: Sequence[Outgoing]) -> PublishCall:
    """The PUBLISH script's keys and arguments (layout in scripts.PUBLISH)."""
    order = list(dict.fromkeys(m.queue for m in messages))
    names = [k for q in order for k in keys.queue(q)]
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
            names.append(keys.idempotency(m.queue, m.idempotency_key))
            key = len(names)
        names.append(keys.record(m.id))
        args += [base[m.queue], m.id, m.body, band(m.priority), 0 if m.eta is None else due_ms(m.eta),
                 key, ms(m.idempotency_window), len(names)]
    names.append(keys.meta)
    return PublishCall(names, args, order, limits)


def publish_reply(got: Any, call: PublishCall, plan: list[int | str]) -> list[str]:
    """The id each original message is known by, or QueueFull if a "reject" queue had no room."""
    if got and got[0] == b"full":
        queue = call.order[int(got[1]) // NKEYS]
        raise QueueFull(f"queue {queue!r} is full: {int(got[2])} waiting, limit {int(got[3])} "
                        f"(on_full={call.limits[queue][1]!r}); nothing was enqueued")
    return [got[x].decode() if isinstance(x, int) else x for x in plan]


# -- results ------------------------------------------------------------------------------------------
def store_call(keys: Keys, records: Sequence[ResultRecord]) -> tuple[list[str], list[Any]]:
    """The STORE script's keys and arguments for `records`."""
    names: list[str] = []
    args: list[Any] = []
    for r in records:
        key = keys.record(r.task_id)
        names += [key, key + WAITERS]  # keys.waiters, without a second call per record
        args += [r.state.value, encode_record(r), expiry_ms(r), 1 if r.state.finished else 0]
    return names, args


RECORD_FIELDS = ["r", "s", "q"]  # HMGET of a result hash, for `record`


def record(task_id: str, fields: list[Any]) -> ResultRecord | None:
    """Decode HMGET r s q of a result hash: a full record, or the QUEUED mark publish leaves."""
    raw, state, queue = fields
    if raw is None:
        if state == b"queued":
            return ResultRecord(task_id, State.QUEUED, queue=(queue or b"").decode())
        return None
    rec = decode_record(raw)
    if rec.expires_at is not None and rec.expires_at <= time.time():
        return None
    return rec
