"""The Store side of the Redis broker: results and the waits on them, cancellation, coordination, the
worker registry and the event log, each a script or one pipeline over the keys of keys.py."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, cast

import msgspec

from ...results import ResultRecord
from ...states import State
from ..store import WorkerInfo
from .connect import guarded
from .keys import Keys
from .plan import (
    BLOCK_CHUNK,
    RECORD_FIELDS,
    STARTED_TTL_MS,
    decode_record,
    encode_record,
    expiry_ms,
    ms,
    record,
    store_call,
)
from .server import Server

_decode_worker = msgspec.json.Decoder(WorkerInfo).decode


class RedisStore:
    """Result hashes with their own expiry, waits that sleep in Redis (BLPOP); RedisBroker's store half."""

    url: str
    keys: Keys
    _server: Server

    # -- results -------------------------------------------------------------------------------
    @guarded
    def started(self, records: Sequence[ResultRecord]) -> set[str]:
        if not records:
            return set()
        args: list[Any] = []
        for r in records:
            args += [encode_record(r), expiry_ms(r)]
        s = self._server
        found = s.run(s.started, [self.keys.record(r.task_id) for r in records], [*args, STARTED_TTL_MS])
        return {records[int(n)].task_id for n in found}

    @guarded
    def store(self, records: Sequence[ResultRecord]) -> None:
        if records:
            s = self._server
            s.batch([(s.store, *store_call(self.keys, records))])

    @guarded
    def queued(self, records: Sequence[ResultRecord]) -> None:
        if records:
            self._server.queued_marks([self.keys.record(r.task_id) for r in records], [r.queue for r in records])

    @guarded
    def forget_queued(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            self._server.forget([self.keys.record(i) for i in task_ids], [])

    @guarded
    def get(self, task_id: str) -> ResultRecord | None:
        return record(task_id, cast(list[Any], self._server.redis.hmget(self.keys.record(task_id), RECORD_FIELDS)))

    @guarded
    def wait(self, task_id: str, timeout: float | None) -> ResultRecord | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        r, key, waiters = self._server.redis, self.keys.record(task_id), self.keys.waiters(task_id)
        mine = self.keys.wake(task_id, os.urandom(6).hex())  # our own wake-up list: no waiter takes another's
        while True:
            remaining = BLOCK_CHUNK if deadline is None else deadline - time.monotonic()
            pipe = r.pipeline(transaction=False)  # register first, then read: a later store wakes us
            pipe.sadd(waiters, mine)
            pipe.pexpire(waiters, ms(BLOCK_CHUNK + 1))
            pipe.hmget(key, RECORD_FIELDS)
            rec = record(task_id, pipe.execute()[2])
            if (rec is not None and rec.state.finished) or remaining <= 0:
                return rec
            got = r.blpop([mine], timeout=min(remaining, BLOCK_CHUNK))
            if got is not None:
                return decode_record(cast(bytes, got[1]))

    def purge_expired(self) -> int:
        return 0  # Redis expires results, keys and notifications itself

    @guarded
    def cancel(self, task_id: str, ttl: float) -> State:
        now = time.time()
        rec = ResultRecord(task_id, State.CANCELLED, updated_at=now, expires_at=now + ttl)
        got = self._server.cancel([self.keys.record(task_id)], [encode_record(rec), ms(ttl)])
        return State(got.decode())

    @guarded
    def cancelled(self, task_ids: Sequence[str]) -> set[str]:
        if not task_ids:
            return set()
        s = self._server
        found = s.run(s.cancelled, [self.keys.record(i) for i in task_ids], [])
        return {task_ids[int(n)] for n in found}

    # -- coordination --------------------------------------------------------------------------
    @guarded
    def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        return bool(self._server.acquire([self.keys.lease(name)], [owner, ms(ttl)]))

    @guarded
    def release_lease(self, name: str, owner: str) -> None:
        self._server.release_lease([self.keys.lease(name)], [owner])

    @guarded
    def get_meta(self, key: str) -> str | None:
        raw = self._server.redis.hget(self.keys.meta, key)
        return None if raw is None else cast(bytes, raw).decode()

    @guarded
    def set_meta(self, key: str, value: str) -> None:
        self._server.redis.hset(self.keys.meta, key, value)

    @guarded
    def add_meta(self, key: str, n: int) -> int:
        return int(self._server.redis.hincrby(self.keys.meta, key, n))

    @guarded
    def join(self, key: str, member: str, ttl: float) -> int:
        k = self.keys.join(key)
        pipe = self._server.redis.pipeline(transaction=True)
        pipe.sadd(k, member)
        pipe.pexpire(k, ms(ttl))
        pipe.scard(k)
        return int(pipe.execute()[2])

    @guarded
    def take_token(self, key: str, rate: float, burst: float) -> float:
        return int(self._server.take([self.keys.bucket(key)], [repr(float(rate)), repr(float(burst))])) / 1000

    @guarded
    def count_start(self, task_id: str, attempt: int, ttl: float) -> int:
        k = self.keys.starts(task_id, attempt)
        pipe = self._server.redis.pipeline(transaction=True)
        pipe.incr(k)
        pipe.pexpire(k, ms(ttl))
        return int(pipe.execute()[0])

    # -- the worker registry and the event log ---------------------------------------------------
    @guarded
    def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        pipe = self._server.redis.pipeline(transaction=True)
        pipe.zadd(self.keys.workers, {worker.id: time.time() + ttl})
        pipe.hset(self.keys.workers_info, worker.id, msgspec.json.encode(worker))
        pipe.execute()

    @guarded
    def worker_gone(self, worker_id: str) -> None:
        pipe = self._server.redis.pipeline(transaction=True)
        pipe.zrem(self.keys.workers, worker_id)
        pipe.hdel(self.keys.workers_info, worker_id)
        pipe.execute()

    @guarded
    def workers(self) -> list[WorkerInfo]:
        r, key, info = self._server.redis, self.keys.workers, self.keys.workers_info
        now = time.time()
        gone = r.zrangebyscore(key, "-inf", now)
        if gone:
            pipe = r.pipeline(transaction=True)
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.hdel(info, *gone)
            pipe.execute()
        alive: list[Any] = sorted(r.zrangebyscore(key, now, "+inf"))
        if not alive:
            return []
        return [_decode_worker(raw) for raw in r.hmget(info, alive) if raw is not None]

    @guarded
    def record_events(self, batch: bytes, retention: float) -> None:
        oldest = int((time.time() - retention) * 1000)
        self._server.redis.xadd(self.keys.events, {"b": batch}, minid=oldest, approximate=True)

    @guarded
    def read_events(self, after: int = 0, limit: int = 100) -> list[tuple[int, bytes]]:
        """Sequence numbers are the stream ids as `ms * 1_000_000 + seq`."""
        start = f"({after // 1_000_000}-{after % 1_000_000}"
        entries = cast(list[Any], self._server.redis.xrange(self.keys.events, min=start, count=limit))
        out: list[tuple[int, bytes]] = []
        for eid, fields in entries:
            at, seq = eid.decode().split("-")
            out.append((int(at) * 1_000_000 + int(seq), fields[b"b"]))
        return out
