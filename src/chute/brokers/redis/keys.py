"""Where the Redis broker keeps everything: every key name under one prefix (docs/brokers/redis.md).

A queue's keys share its hash slot (`{queue}`) and reach its scripts in one fixed order; a result
record's keys share the task's (`{task id}`). The plan and both drivers name keys only through
here. Two scripts build record keys themselves from the prefix (scripts.py: PUBLISH, DEAD_MOVE) and
FETCH from `Keys.record_head`: the same layout, in Lua.
"""

from __future__ import annotations

BANDS = 10  # priority bands 0..9, one stream each
NKEYS = BANDS + 5  # a queue's keys, in their scripts' order: p0..p9, claims, leases, delayed, bodies, dead
WAITERS = ":waiters"  # a result record's key + this: the `wait()` calls blocked on it
CACHED = 10_000  # queues whose key lists are kept (a process naming more builds the rest each time)


def band(priority: int) -> int:
    """The priority band (and stream) of a message's priority, clamped to 0..9."""
    return min(BANDS - 1, max(0, int(priority)))


class Keys:
    """The key names under one prefix (`?prefix=`, default `chute`)."""

    __slots__ = ("_queues", "events", "meta", "prefix", "queues", "record_head", "subs", "workers",
                 "workers_info")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.meta = f"{prefix}:meta"  # small values and counters (Coordination, unrouted, dropped)
        self.subs = f"{prefix}:subs"  # topic subscriptions: `<group>\n<pattern>` -> 1
        self.queues = f"{prefix}:queues"  # every queue name seen: stats and the CLI
        self.workers = f"{prefix}:workers"  # worker id -> heartbeat expiry
        self.workers_info = f"{prefix}:workers:info"  # worker id -> WorkerInfo JSON
        self.events = f"{prefix}:events"
        self.record_head = f"{prefix}:r:{{".encode()  # a result record's key is this + task id + "}"
        self._queues: dict[str, list[str]] = {}

    def queue(self, queue: str) -> list[str]:
        """The queue's NKEYS keys, in the order its scripts take them."""
        keys = self._queues.get(queue)
        if keys is None:
            base = f"{self.prefix}:{{{queue}}}"
            keys = [*(f"{base}:p{n}" for n in range(BANDS)), f"{base}:claims", f"{base}:leases",
                    f"{base}:delayed", f"{base}:bodies", f"{base}:dead"]
            if len(self._queues) < CACHED:
                self._queues[queue] = keys
        return keys

    def stream(self, queue: str, priority: int) -> str:
        """The stream a message of this priority waits in."""
        return self.queue(queue)[band(priority)]

    def streams(self, queue: str) -> list[str]:
        """The queue's streams, band 0 first."""
        return self.queue(queue)[:BANDS]

    def dead(self, queue: str) -> str:
        """The queue's dead-letter stream."""
        return self.queue(queue)[-1]

    def idempotency(self, queue: str, key: str) -> str:
        """An idempotency key's claim, in its queue's slot: scoped to the queue (`shared.idempotency_slot`)."""
        return f"{self.prefix}:{{{queue}}}:key:{key}"

    def record(self, task_id: str) -> str:
        """A task's result record (a hash: `s` state, `r` the msgpack record, `q` queue of a QUEUED mark)."""
        return f"{self.prefix}:r:{{{task_id}}}"

    def waiters(self, task_id: str) -> str:
        """The wake-up list names of the `wait()` calls blocked on a task."""
        return self.record(task_id) + WAITERS

    def wake(self, task_id: str, token: str) -> str:
        """One waiter's own wake-up list: no waiter takes another's."""
        return f"{self.prefix}:r:{{{task_id}}}:wake:{token}"

    def starts(self, task_id: str, attempt: int) -> str:
        return f"{self.prefix}:starts:{{{task_id}}}:{attempt}"

    def lease(self, name: str) -> str:
        return f"{self.prefix}:lease:{name}"

    def join(self, key: str) -> str:
        return f"{self.prefix}:join:{key}"

    def bucket(self, key: str) -> str:
        return f"{self.prefix}:bucket:{key}"
