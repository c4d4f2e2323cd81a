"""What bounds a one-by-one `delay()` on Redis: raw round trips on one socket (hiredis packer and
reader, no chute, no redis-py), 20,000 calls each, twice: PING, the ENQUEUE script (XADD + QUEUED
record), the same work as pipelined HSET + PEXPIRE NX + XADD, and XADD alone.

    .venv/bin/python benchmarks/redis_enqueue_floor.py [redis db, default 9]

It writes only keys under `chute-floor:` and deletes them at the end.
"""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

import hiredis

from chute.brokers.redis import scripts as lua

N = 20_000


def main(db: int) -> None:
    sock = socket.create_connection(("127.0.0.1", 6379))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = hiredis.Reader()

    def pack(*args: Any) -> bytes:
        return hiredis.pack_command(args)

    def call(packed: bytes, replies: int = 1) -> list[Any]:
        sock.sendall(packed)
        out: list[Any] = []
        while len(out) < replies:
            reply = reader.gets()
            if reply is False:
                reader.feed(sock.recv(65536))
            else:
                out.append(reply)
        return out

    call(pack("SELECT", db))
    sha = call(pack("SCRIPT", "LOAD", lua.ENQUEUE))[0]
    body = b"x" * 200

    def bench(name: str, make: Any, replies: int = 1) -> None:
        t = time.perf_counter()
        for i in range(N):
            call(make(i), replies)
        print(f"{name}: {(time.perf_counter() - t) / N * 1e6:.1f} µs a call")

    try:
        for rep in range(2):
            bench("PING", lambda i: pack("PING"))
            bench("EVALSHA ENQUEUE", lambda i, rep=rep: pack("EVALSHA", sha, 2, "chute-floor:s:{q}",
                                                    f"chute-floor:r:{{{i}a{rep}}}", str(i), body, "q"))
            bench("HSET + PEXPIRE NX + XADD", lambda i, rep=rep: (
                pack("HSET", f"chute-floor:r:{{{i}b{rep}}}", "s", "queued", "q", "q")
                + pack("PEXPIRE", f"chute-floor:r:{{{i}b{rep}}}", 86_400_000, "NX")
                + pack("XADD", "chute-floor:s2:{q}", "*", "id", str(i), "body", body)), 3)
            bench("XADD alone", lambda i: pack("XADD", "chute-floor:s3:{q}", "*", "id", str(i), "body", body))
    finally:
        cursor = b"0"
        while True:
            cursor, keys = call(pack("SCAN", cursor, "MATCH", "chute-floor:*", "COUNT", 1000))[0]
            if keys:
                call(pack("UNLINK", *keys))
            if cursor == b"0":
                break


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 9)
