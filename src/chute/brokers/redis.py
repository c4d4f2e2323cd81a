"""Broker and result store on Redis >= 6.2: Streams with a consumer group (`redis://host:port/db?prefix=chute`).

Guarantees: at-least-once delivery to every machine that reaches the server; each multi-step
operation is one Lua script (lua scripts in redis_scripts.py), so several workers promoting delays
or reclaiming leases at once never lose or double a message; a claim is fenced by a token, so a
worker whose lease ran out cannot ack, nack, extend or dead-letter what another worker now holds.
Durability is Redis's: `appendonly yes` + `appendfsync always` loses nothing acknowledged; with
`everysec` a server crash may lose the last second (docs/brokers/redis.md). Non-guarantees: leases
use the server's clock, ETAs the producer's; a released or retried message goes to the back of its
priority band; multi-queue fetches and batches need a standalone server (not Redis Cluster).

Design: one stream per (queue, priority band 0..9), read through the group `chute`. The lease is
a sorted set (entry -> expiry) beside a hash (entry -> claim token), not the PEL idle time, because
each fetch may ask for its own lease; expired leases are re-claimed with XCLAIM (which counts the
delivery) by whichever fetch runs next. Delays wait in a sorted set and are promoted by the fetch
script. Round trips: `delay()` 1; a batch publish 1 (one script for every queue in it); fetch 1
per batch (promote, reclaim, XREADGROUP highest band first), plus one `XREAD BLOCK` that sleeps in
Redis when idle; ack with results 1 per batch; extend 1 per heartbeat; `wait()` 1 + a BLPOP.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar, cast
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import msgspec
import redis
from redis.backoff import ExponentialBackoff
from redis.commands.core import Script
from redis.retry import Retry

from ..errors import BrokerError, BrokerUnavailable, InvalidURL
from ..results import ResultRecord
from ..states import State
from ..topics import group_queue
from . import redact_url
from . import redis_scripts as lua
from .base import DeadLetter, Delivery, Features, Outgoing, QueueStats
from .pairing import AsyncBroker
from .redis_fast import FastCalls, bulk
from .redis_plan import band, due_ms, is_lone_enqueue, ms, publish_call, publish_reply, subscriptions
from .redis_scripts import BANDS
from .shared import fan_out, unrouted_key
from .store import Store, WorkerInfo

P = ParamSpec("P")
T = TypeVar("T")
GROUP = "chute"
BLOCK_CHUNK = 1.0  # seconds per XREAD/BLPOP, well under the socket timeout
STARTED_TTL_MS = 86_400_000  # a STARTED record without its own expiry
_FINAL = ("succeeded", "failed", "cancelled")
_encode_record = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(ResultRecord).decode
_decode_worker = msgspec.json.Decoder(WorkerInfo).decode


def driver_identity() -> dict[str, Any]:
    """The connection option that names redis-py's version for CLIENT SETINFO. Left out, redis-py
    reads it from the installed packages' metadata on the first connection of each process
    (importlib.metadata: 4-10 ms, a third of a producer's start after its imports)."""
    try:
        from redis.driver_info import DriverInfo  # newer redis-py, where `lib_version` is deprecated
    except ImportError:
        return {"lib_version": redis.__version__}
    return {"driver_info": DriverInfo(lib_version=redis.__version__)}


def _guarded(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn redis-py's errors into chute's: BrokerUnavailable when the server cannot be reached."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except redis.AuthenticationError as exc:  # a ConnectionError to redis-py, but no outage
            url = getattr(args[0], "url", "redis")
            raise BrokerError(f"Redis at {url} refused the credentials ({exc}); check the URL's user and "
                              "password") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            url = getattr(args[0], "url", "redis")
            raise BrokerUnavailable(f"Redis at {url} is unreachable ({exc}); nothing was done, "
                                    "try again when it is back") from None
        except redis.RedisError as exc:
            url = getattr(args[0], "url", "redis")
            raise BrokerError(f"Redis at {url}: {exc}") from None

    return call






class RedisBroker:
    """Queue and Store on one Redis server, shared by every machine that reaches it."""

    # ack(deliveries, results) writes both in one pipeline; each Delivery says whether its task was
    # cancelled; `publish` marks QUEUED and `started` marks STARTED in their own scripts
    features = Features(acks_with_results=True, cancellation_at_fetch=True, marks_started=True, socket_io=True)

    def __init__(self, client: redis.Redis, *, prefix: str = "chute", url: str = "redis://") -> None:
        self.url = redact_url(url)
        self.prefix = prefix
        self._r = client
        self._known: set[str] = set()
        s = client.register_script
        self._enqueue, self._publish, self._fetch, self._ack = s(lua.ENQUEUE), s(lua.PUBLISH), s(lua.FETCH), s(lua.ACK)
        self._nack, self._release, self._dead = s(lua.NACK), s(lua.RELEASE), s(lua.DEAD)
        self._extend, self._stats, self._dead_move = s(lua.EXTEND), s(lua.STATS), s(lua.DEAD_MOVE)
        self._started, self._store_script, self._cancel, self._cancelled = (
            s(lua.STARTED), s(lua.STORE), s(lua.CANCEL), s(lua.CANCELLED))
        self._acquire, self._release_lease, self._take = s(lua.ACQUIRE), s(lua.RELEASE_LEASE), s(lua.TAKE)
        self._queued_marks, self._forget = s(lua.QUEUED_MARKS), s(lua.FORGET_QUEUED)
        self._scripts = [v for v in vars(self).values() if isinstance(v, Script)]
        self._fast = FastCalls(client.connection_pool, self.url)
        self._qkeys_cache: dict[str, list[str]] = {}
        self._enqueue_ends: dict[tuple[str, int], tuple[bytes, bytes]] = {}
        self._rkey_head = self._rkey("").encode()[:-1]  # a result record's key is this + id + "}"
        self._dsn = url  # with its password: the asyncio side opens its own connections
        self._aio: Any = None  # redis_async.AsyncRedis, made on first use

    @classmethod
    def from_url(cls, url: str) -> RedisBroker:
        """Open `redis://[:password@]host:port/db[?prefix=NAME]` (or rediss:// for TLS)."""
        parts = urlsplit(url)
        options = dict(parse_qsl(parts.query))
        unknown = set(options) - {"prefix"}
        if unknown:
            raise InvalidURL(f"{redact_url(url)!r}: unknown option(s) {', '.join(sorted(unknown))}; known: prefix=NAME")
        prefix = options.get("prefix", "chute")
        if not prefix or any(c in prefix for c in "{}: "):
            raise InvalidURL(f"{redact_url(url)!r}: prefix must be a non-empty name without braces, colons or spaces")
        try:
            pool = redis.ConnectionPool.from_url(
                urlunsplit(parts._replace(query="")), socket_connect_timeout=2.0, socket_timeout=3.0,
                socket_keepalive=True, health_check_interval=30, protocol=2, **driver_identity(),
                # refused or reset connections are retried briefly; a timeout is not (it would hang past 5 s)
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3, supported_errors=(redis.ConnectionError,)))
        except ValueError as exc:
            raise InvalidURL(f"{redact_url(url)!r}: {exc}") from None
        return cls(redis.Redis(connection_pool=pool), prefix=prefix, url=url)

    def _batch(self, calls: Sequence[tuple[Script, list[str], list[Any]]]) -> list[Any]:
        """Run idempotent script calls in one round trip (a pipeline; not a transaction).

        First on the lean path's sockets; where that cannot (an error reply, NOSCRIPT after a server
        restart forgot the scripts), through redis-py: plain EVALSHA, since its pipelined scripts
        would add a SCRIPT EXISTS round trip each time, then load the scripts and run the batch again.
        """
        replies = self._fast.call_many([("EVALSHA", sc.sha, len(k), *k, *a) for sc, k, a in calls])
        if replies is not None:
            return replies
        for attempt in (0, 1):
            pipe = self._r.pipeline(transaction=False)
            for sc, k, a in calls:
                pipe.evalsha(sc.sha, len(k), *k, *a)
            try:
                return pipe.execute()
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                for script in self._scripts:
                    script.sha = self._r.script_load(script.script)
        raise AssertionError("unreachable")

    def _lean(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run `script` on the lean path's sockets (a worker's per-batch calls, a batch publish: no
        redis-py dispatch or per-argument encoding, and a reply asked for again before sleeping);
        where that cannot run it, through redis-py."""
        reply = self._fast.call("EVALSHA", script.sha, len(keys), *keys, *args)
        return script(keys, args) if reply is None else reply

    def _enqueue_command(self, m: Outgoing) -> bytes:
        """`EVALSHA <ENQUEUE> 2 <stream> <record> <id> <body> <queue>` packed as hiredis would pack it,
        the parts fixed by the queue and band packed once (the packer was 12,300 of a delay()'s 67,000 instructions)."""
        ends = self._enqueue_ends.get((m.queue, m.priority))
        if ends is None:
            stream = self._qkeys(m.queue)[band(m.priority)].encode()
            ends = (b"*8\r\n" + bulk(b"EVALSHA") + bulk(self._enqueue.sha.encode()) + bulk(b"2") + bulk(stream),
                    bulk(m.queue.encode()))
            if len(self._enqueue_ends) < 10_000:
                self._enqueue_ends[(m.queue, m.priority)] = ends
        mid = m.id.encode()
        return b"%b$%d\r\n%b%b}\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n%b" % (
            ends[0], len(self._rkey_head) + len(mid) + 1, self._rkey_head, mid, len(mid), mid, len(m.body), m.body,
            ends[1])

    # -- key layout (docs/brokers/redis.md) ---------------------------------------------------------
    def _qkeys(self, queue: str) -> list[str]:
        keys = self._qkeys_cache.get(queue)
        if keys is None:
            base = f"{self.prefix}:{{{queue}}}"
            keys = [*(f"{base}:p{band}" for band in range(BANDS)), f"{base}:claims", f"{base}:leases",
                    f"{base}:delayed", f"{base}:bodies", f"{base}:dead"]
            if len(self._qkeys_cache) < 10_000:
                self._qkeys_cache[queue] = keys
        return keys

    def _rkey(self, task_id: str) -> str:
        return f"{self.prefix}:r:{{{task_id}}}"

    @staticmethod
    def _consumer() -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    # -- producing -----------------------------------------------------------------------------
    @_guarded
    def publish(self, messages: Sequence[Outgoing]) -> list[str]:
        if not messages:
            return []
        if is_lone_enqueue(self, messages):  # the one-by-one fast path: XADD + QUEUED mark
            m = messages[0]
            if self._fast.call_packed(self._enqueue_command(m)) is None:  # the general path: retries, reloads
                self._enqueue([self._qkeys(m.queue)[band(m.priority)], self._rkey(m.id)], [m.id, m.body, m.queue])
            return [m.id]
        plan: list[int | str] = list(range(len(messages)))
        if any(m.topic is not None for m in messages):
            subs = cast(list[bytes], self._r.hkeys(f"{self.prefix}:subs"))
            messages, plan, unrouted = fan_out(messages, subscriptions(subs))
            for topic in unrouted:  # counted, not an error
                self._r.hincrby(f"{self.prefix}:meta", unrouted_key(topic), 1)
            if not messages:
                return [str(x) for x in plan]
        self._remember({m.queue for m in messages})
        call = publish_call(self, messages)  # over the lean sockets: hiredis packs its many arguments in C
        return publish_reply(self._lean(self._publish, call.keys, call.args), call, plan)

    @_guarded
    def declare_group(self, group: str, patterns: Sequence[str]) -> None:
        if patterns:
            self._r.hset(f"{self.prefix}:subs", mapping={f"{group}\n{p}": 1 for p in patterns})
            self._remember({group_queue(group)})

    def _remember(self, queues: set[str]) -> None:
        new = queues - self._known
        if new:  # the registry of queue names, for stats and the CLI: once per queue and process
            self._r.sadd(f"{self.prefix}:queues", *sorted(new))
            self._known |= new

    # -- consuming -----------------------------------------------------------------------------
    @_guarded
    def fetch(self, queues: Sequence[str], limit: int, lease: float, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        keys = [k for q in queues for k in self._qkeys(q)]
        while True:
            token = os.urandom(8).hex()
            now, next_due, got, last = self._lean(self._fetch, keys, [GROUP, self._consumer(), limit, ms(lease), token,
                                                                     self._rkey_head])
            if got:
                return [Delivery(queues[q], mid.decode(), body, token, int(n), tag.decode(), cancelled == 1)
                        for q, tag, mid, body, n, cancelled in got]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            block = min(remaining, BLOCK_CHUNK)
            if next_due >= 0:
                block = min(block, max(0.0, (next_due - now) / 1000))
            streams = {k: i for k, i in zip((k for q in queues for k in self._qkeys(q)[:BANDS]), last, strict=True)}
            self._r.xread(cast(Any, streams), count=1, block=ms(block))  # sleeps in Redis until a publish or `block`

    def _per_queue(self, deliveries: Sequence[Delivery]) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, d in enumerate(deliveries):
            groups.setdefault(d.queue, []).append(i)
        return groups

    @_guarded
    def ack(self, deliveries: Sequence[Delivery], results: Sequence[ResultRecord] = ()) -> int:
        """Acknowledge; with `results`, write them first in the same pipeline (one round trip)."""
        if not deliveries and not results:
            return 0
        groups = self._per_queue(deliveries)
        calls = self._store_calls(results)
        for queue, idx in groups.items():
            args: list[Any] = [GROUP]
            for i in idx:
                args += [str(deliveries[i].tag), deliveries[i].claim]
            calls.append((self._ack, self._qkeys(queue), args))
        replies = self._batch(calls)
        return sum(int(n) for n in replies[len(replies) - len(groups):])

    @_guarded
    def nack(self, delivery: Delivery, body: bytes, retry_at: float) -> bool:
        d = delivery
        return bool(self._nack(self._qkeys(d.queue), [GROUP, str(d.tag), d.claim, d.id, body, due_ms(retry_at)]))

    @_guarded
    def release(self, deliveries: Sequence[Delivery]) -> int:
        n = 0
        for queue, idx in self._per_queue(deliveries).items():
            args: list[Any] = [GROUP]
            for i in idx:
                d = deliveries[i]
                args += [str(d.tag), d.claim, d.id, d.body]
            n += int(self._release(self._qkeys(queue), args))
        return n

    @_guarded
    def dead_letter(self, delivery: Delivery, reason: str, body: bytes | None = None) -> bool:
        d = delivery
        return bool(self._dead(self._qkeys(d.queue), [GROUP, str(d.tag), d.claim, d.id,
                                                       d.body if body is None else body, reason]))

    @_guarded
    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        if not deliveries:
            return []
        held = [False] * len(deliveries)
        groups = self._per_queue(deliveries)
        calls = []
        for queue, idx in groups.items():
            args: list[Any] = [GROUP, ms(lease)]
            for i in idx:
                args += [str(deliveries[i].tag), deliveries[i].claim]
            calls.append((self._extend, self._qkeys(queue), args))
        for idx, got in zip(groups.values(), self._batch(calls), strict=True):
            for i, ok in zip(idx, got, strict=True):
                held[i] = bool(ok)
        return held

    # -- operating -----------------------------------------------------------------------------
    def _queues(self, queue: str | None = None) -> list[str]:
        if queue is not None:
            return [queue]
        return sorted(cast(bytes, q).decode() for q in self._r.smembers(f"{self.prefix}:queues"))

    @_guarded
    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        names = sorted(set(queues)) if queues is not None else self._queues()
        got = self._batch([(self._stats, self._qkeys(q), []) for q in names]) if names else []
        return [QueueStats(q, *map(int, counts)) for q, counts in zip(names, got, strict=True)]

    @_guarded
    def dead_letters(self, queue: str | None = None, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        names = self._queues(queue)
        pipe = self._r.pipeline(transaction=False)
        for q in names:
            pipe.xrange(self._qkeys(q)[-1], count=offset + limit)
        found: list[tuple[int, int, DeadLetter]] = []
        for q, entries in zip(names, pipe.execute(), strict=True):
            for n, (_, f) in enumerate(entries):
                at = int(f.get(b"at", 0))
                found.append((at, n, DeadLetter(q, f.get(b"id", b"").decode(), f.get(b"body", b""),
                                                f.get(b"reason", b"").decode(errors="replace"), at / 1000)))
        found.sort(key=lambda x: (x[0], x[1]))
        return [d for _, _, d in found[offset:offset + limit]]

    def _move_dead(self, replay: bool, queue: str | None, ids: Sequence[str] | None) -> int:
        flags = ["1" if replay else "0", "1" if ids is None else "0", self.prefix]
        return sum(int(self._dead_move(self._qkeys(q), [*flags, q, *(ids or ())])) for q in self._queues(queue))

    @_guarded
    def replay(self, queue: str | None = None, ids: Sequence[str] | None = None) -> int:
        return self._move_dead(True, queue, ids)

    @_guarded
    def purge_dead(self, queue: str | None = None, ids: Sequence[str] | None = None) -> int:
        return self._move_dead(False, queue, ids)

    @_guarded
    def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.zadd(f"{self.prefix}:workers", {worker.id: time.time() + ttl})
        pipe.hset(f"{self.prefix}:workers:info", worker.id, msgspec.json.encode(worker))
        pipe.execute()

    @_guarded
    def worker_gone(self, worker_id: str) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.zrem(f"{self.prefix}:workers", worker_id)
        pipe.hdel(f"{self.prefix}:workers:info", worker_id)
        pipe.execute()

    @_guarded
    def workers(self) -> list[WorkerInfo]:
        key, info = f"{self.prefix}:workers", f"{self.prefix}:workers:info"
        now = time.time()
        gone = self._r.zrangebyscore(key, "-inf", now)
        if gone:
            pipe = self._r.pipeline(transaction=True)
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.hdel(info, *gone)
            pipe.execute()
        alive: list[Any] = sorted(self._r.zrangebyscore(key, now, "+inf"))
        if not alive:
            return []
        return [_decode_worker(raw) for raw in self._r.hmget(info, alive) if raw is not None]

    @_guarded
    def record_events(self, batch: bytes, retention: float) -> None:
        oldest = int((time.time() - retention) * 1000)
        self._r.xadd(f"{self.prefix}:events", {"b": batch}, minid=oldest, approximate=True)

    @_guarded
    def read_events(self, after: int = 0, limit: int = 100) -> list[tuple[int, bytes]]:
        """Sequence numbers are the stream ids as `ms * 1_000_000 + seq`."""
        start = f"({after // 1_000_000}-{after % 1_000_000}"
        entries = cast(list[Any], self._r.xrange(f"{self.prefix}:events", min=start, count=limit))
        out: list[tuple[int, bytes]] = []
        for eid, fields in entries:
            ms, seq = eid.decode().split("-")
            out.append((int(ms) * 1_000_000 + int(seq), fields[b"b"]))
        return out

    def close(self) -> None:
        self._fast.close()
        if self._aio is not None:
            self._aio.close()
        self._r.close()
        self._r.connection_pool.disconnect()

    # -- asyncio: the same scripts on redis.asyncio (redis_async.py) ------------------------------
    def _async(self) -> Any:
        if self._aio is None:
            from .redis_async import AsyncRedis

            self._aio = AsyncRedis(self, self._dsn)
        return self._aio

    @property
    def aio(self) -> AsyncBroker:
        """The same scripts on redis.asyncio: the queue's and the store's asyncio side."""
        return cast(AsyncBroker, self._async())

    def bind(self, store: Store) -> None:
        pass  # it keeps its own bookkeeping

    def beat(self, worker_id: str) -> tuple[dict[str, int], dict[str, int]]:
        return {}, {}  # counted in `stats` (the streams' pending entries)

    def stopped(self, worker_id: str) -> None:
        pass  # it prefetches nothing

    # -- ResultBackend -------------------------------------------------------------------------
    @_guarded
    def started(self, records: Sequence[ResultRecord]) -> set[str]:
        if not records:
            return set()
        args: list[Any] = []
        for r in records:
            args += [_encode_record(r), _expiry(r)]
        found = self._lean(self._started, [self._rkey(r.task_id) for r in records], [*args, STARTED_TTL_MS])
        return {records[int(n)].task_id for n in found}

    @_guarded
    def store(self, records: Sequence[ResultRecord]) -> None:
        if records:
            self._batch(self._store_calls(records))

    def _store_calls(self, records: Sequence[ResultRecord]) -> list[tuple[Script, list[str], list[Any]]]:
        """The STORE script call that writes `records` (none for no records)."""
        if not records:
            return []
        keys: list[str] = []
        args: list[Any] = []
        for r in records:
            key = self._rkey(r.task_id)
            keys += [key, f"{key}:waiters"]
            args += [r.state.value, _encode_record(r), _expiry(r), 1 if r.state.finished else 0]
        return [(self._store_script, keys, args)]

    @_guarded
    def queued(self, records: Sequence[ResultRecord]) -> None:
        if records:
            self._queued_marks([self._rkey(r.task_id) for r in records], [r.queue for r in records])

    @_guarded
    def forget_queued(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            self._forget([self._rkey(i) for i in task_ids], [])

    @_guarded
    def get(self, task_id: str) -> ResultRecord | None:
        return _record(task_id, cast(list[Any], self._r.hmget(self._rkey(task_id), ["r", "s", "q"])))

    @_guarded
    def wait(self, task_id: str, timeout: float | None) -> ResultRecord | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        key = self._rkey(task_id)
        mine = f"{key}:wake:{os.urandom(6).hex()}"  # our own wake-up list: no waiter takes another's
        while True:
            remaining = BLOCK_CHUNK if deadline is None else deadline - time.monotonic()
            pipe = self._r.pipeline(transaction=False)  # register first, then read: a later store wakes us
            pipe.sadd(f"{key}:waiters", mine)
            pipe.pexpire(f"{key}:waiters", ms(BLOCK_CHUNK + 1))
            pipe.hmget(key, ["r", "s", "q"])
            rec = _record(task_id, pipe.execute()[2])
            if (rec is not None and rec.state.finished) or remaining <= 0:
                return rec
            got = self._r.blpop([mine], timeout=min(remaining, BLOCK_CHUNK))
            if got is not None:
                return _decode_record(cast(bytes, got[1]))

    def purge_expired(self) -> int:
        return 0  # Redis expires results, keys and notifications itself

    @_guarded
    def cancel(self, task_id: str, ttl: float) -> State:
        now = time.time()
        rec = ResultRecord(task_id, State.CANCELLED, updated_at=now, expires_at=now + ttl)
        got = self._cancel([self._rkey(task_id)], [_encode_record(rec), ms(ttl)])
        return State(got.decode())

    @_guarded
    def cancelled(self, task_ids: Sequence[str]) -> set[str]:
        if not task_ids:
            return set()
        found = self._lean(self._cancelled, [self._rkey(i) for i in task_ids], [])
        return {task_ids[int(n)] for n in found}

    @_guarded
    def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        return bool(self._acquire([f"{self.prefix}:lease:{name}"], [owner, ms(ttl)]))

    @_guarded
    def release_lease(self, name: str, owner: str) -> None:
        self._release_lease([f"{self.prefix}:lease:{name}"], [owner])

    @_guarded
    def get_meta(self, key: str) -> str | None:
        raw = self._r.hget(f"{self.prefix}:meta", key)
        return None if raw is None else cast(bytes, raw).decode()

    @_guarded
    def set_meta(self, key: str, value: str) -> None:
        self._r.hset(f"{self.prefix}:meta", key, value)

    @_guarded
    def add_meta(self, key: str, n: int) -> int:
        return int(self._r.hincrby(f"{self.prefix}:meta", key, n))

    @_guarded
    def join(self, key: str, member: str, ttl: float) -> int:
        k = f"{self.prefix}:join:{key}"
        pipe = self._r.pipeline(transaction=True)
        pipe.sadd(k, member)
        pipe.pexpire(k, ms(ttl))
        pipe.scard(k)
        return int(pipe.execute()[2])

    @_guarded
    def take_token(self, key: str, rate: float, burst: float) -> float:
        return int(self._take([f"{self.prefix}:bucket:{key}"], [repr(float(rate)), repr(float(burst))])) / 1000

    @_guarded
    def count_start(self, task_id: str, attempt: int, ttl: float) -> int:
        k = f"{self.prefix}:starts:{{{task_id}}}:{attempt}"
        pipe = self._r.pipeline(transaction=True)
        pipe.incr(k)
        pipe.pexpire(k, ms(ttl))
        return int(pipe.execute()[0])


def _record(task_id: str, fields: list[Any]) -> ResultRecord | None:
    """Decode HMGET r s q of a result hash: a full record, or the QUEUED mark publish leaves."""
    raw, state, queue = fields
    if raw is None:
        if state == b"queued":
            return ResultRecord(task_id, State.QUEUED, queue=(queue or b"").decode())
        return None
    rec = _decode_record(raw)
    if rec.expires_at is not None and rec.expires_at <= time.time():
        return None
    return rec




def _expiry(r: ResultRecord) -> int:
    return 0 if r.expires_at is None else max(1, int(r.expires_at * 1000))
