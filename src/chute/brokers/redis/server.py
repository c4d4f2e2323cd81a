"""The Redis server as the sync side talks to it: redis-py's client, the lean sockets beside it, and the
broker's Lua scripts, registered once and run alone or many in one round trip."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script

from . import scripts as lua
from .lean import FastCalls

Call = tuple[Script, list[str], list[Any]]  # a script, its keys, its arguments


class Server:
    """redis-py's client (`redis`), chute's own sockets (`lean`) and every script, by name."""

    def __init__(self, client: redis.Redis, url: str) -> None:
        self.redis = client
        self.lean = FastCalls(client.connection_pool, url)
        s = client.register_script
        self.enqueue, self.publish, self.fetch, self.ack = s(lua.ENQUEUE), s(lua.PUBLISH), s(lua.FETCH), s(lua.ACK)
        self.nack, self.release, self.dead = s(lua.NACK), s(lua.RELEASE), s(lua.DEAD)
        self.extend, self.stats, self.dead_move = s(lua.EXTEND), s(lua.STATS), s(lua.DEAD_MOVE)
        self.started, self.store, self.cancel, self.cancelled = (
            s(lua.STARTED), s(lua.STORE), s(lua.CANCEL), s(lua.CANCELLED))
        self.acquire, self.release_lease, self.take = s(lua.ACQUIRE), s(lua.RELEASE_LEASE), s(lua.TAKE)
        self.queued_marks, self.forget = s(lua.QUEUED_MARKS), s(lua.FORGET_QUEUED)
        self.scripts = [v for v in vars(self).values() if isinstance(v, Script)]

    def run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run `script` on the lean sockets (a worker's per-batch calls, a batch publish: no redis-py
        dispatch or per-argument encoding, and a reply asked for again before sleeping); where that
        cannot run it, through redis-py."""
        reply = self.lean.call("EVALSHA", script.sha, len(keys), *keys, *args)
        return script(keys, args) if reply is None else reply

    def batch(self, calls: Sequence[Call]) -> list[Any]:
        """Run idempotent script calls in one round trip (a pipeline; not a transaction).

        First on the lean sockets; where that cannot (an error reply, NOSCRIPT after a server
        restart forgot the scripts), through redis-py: plain EVALSHA, since its pipelined scripts
        would add a SCRIPT EXISTS round trip each time, then load the scripts and run the batch again.
        """
        replies = self.lean.call_many([("EVALSHA", sc.sha, len(k), *k, *a) for sc, k, a in calls])
        if replies is not None:
            return replies
        for attempt in (0, 1):
            pipe = self.redis.pipeline(transaction=False)
            for sc, k, a in calls:
                pipe.evalsha(sc.sha, len(k), *k, *a)
            try:
                return pipe.execute()
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                for script in self.scripts:
                    script.sha = self.redis.script_load(script.script)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.lean.close()
        self.redis.close()
        self.redis.connection_pool.disconnect()
