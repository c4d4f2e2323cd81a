"""The Redis broker with real worker processes: kills, concurrent promotion, interop, its lean path.

The shared server at 127.0.0.1:6379 is only ever used under a fresh key prefix (the `url` fixture); what
would reach every client of a server (SCRIPT FLUSH, CLIENT KILL, SIGSTOP) runs on a redis-server of the
test's own. The server-restart scenario is in tests/test_restart.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import chute
from chute import State
from chute.errors import BrokerUnavailable, InvalidURL
from conftest import REDIS
from helpers import free_port, producer, ran, start_worker, stop, wait_for
from servers import RedisServer

pytestmark = [pytest.mark.brokers("redis"), pytest.mark.timeout(120)]
HOST, PORT = REDIS


@pytest.fixture
def prefix(url: str) -> str:
    return url.rsplit("prefix=", 1)[1]


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, for what would reach every client of the shared one (SCRIPT FLUSH,
    CLIENT KILL, SIGSTOP)."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_sigkill_mid_task_runs_again_on_another_worker_after_the_lease(url: str, tmp_path: Path) -> None:
    app = producer(url)
    log = tmp_path / "ran.log"
    env = {"CHUTE_TEST_LEASE": "2", "CHUTE_TEST_LOG": str(log)}
    first = start_worker(url, "apps.basic:app", "-c", "1", **env)
    second = None
    try:
        r = app.send_task("apps.basic.sleep_then", [1.0, 42])
        wait_for(lambda: r.status is State.STARTED, what="task started")
        first.send_signal(signal.SIGKILL)
        first.wait(5)
        killed_at = time.monotonic()
        second = start_worker(url, "apps.basic:app", "-c", "1", **env)
        assert r.get(timeout=15) == 42
        assert 1.5 <= time.monotonic() - killed_at < 10
        assert [p for v, p in ran(log)] == [second.pid]  # the killed run never finished
        (s,) = app.broker.stats(["default"])
        assert (s.ready, s.in_flight, s.dead) == (0, 0, 0)
    finally:
        for p in (first, second):
            if p is not None:
                stop(p)
        app.close()


def test_delayed_messages_promoted_by_several_workers_run_exactly_once(url: str, tmp_path: Path) -> None:
    app = producer(url)
    log = tmp_path / "ran.log"
    workers = [start_worker(url, "apps.basic:app", "-c", "4", CHUTE_TEST_LOG=str(log)) for _ in range(3)]
    try:
        wait_for(lambda: len(app.store.workers()) == 3, timeout=30, what="three workers up")  # all promote
        due = time.time() + 1.5  # one batch: all 300 still delayed when counted, however busy the machine
        work = app.tasks["apps.basic.sleep_then"]
        sent = app.send_many([work.s(0.0, i).set(eta=due + (i % 20) * 0.02) for i in range(300)])
        (s,) = app.broker.stats(["default"])
        assert s.delayed == 300
        wait_for(lambda: len(ran(log)) >= 300, timeout=20, what="300 delayed tasks to run")
        time.sleep(0.3)  # a second promotion of anything would run within this
        values = sorted(v for v, _ in ran(log))
        assert values == list(range(300))
        assert len({p for _, p in ran(log)}) >= 2  # several workers took part
        assert all(r.status is State.SUCCEEDED for r in sent[:10])
    finally:
        for w in workers:
            stop(w)
        app.close()


def test_plain_redis_clients_can_produce_and_read_chute_messages(url: str, prefix: str) -> None:
    app = producer(url)
    client = redis.Redis(HOST, PORT)
    stream = f"{prefix}:{{default}}:p0"
    sent = app.send_task("apps.basic.add", [1, 2])
    assert sent.status is State.QUEUED
    entries: Any = client.xrange(stream)
    ((_, fields),) = entries
    assert fields[b"id"].decode() == sent.id
    env = json.loads(fields[b"body"])
    assert (env["v"], env["id"], env["name"], env["args"]) == (1, sent.id, "apps.basic.add", [1, 2])
    by_hand = os.urandom(16).hex()
    body = {"v": 1, "id": by_hand, "name": "apps.basic.add", "created": time.time(), "queue": "default",
            "args": [20, 22]}
    client.xadd(stream, {"id": by_hand, "body": json.dumps(body)})
    worker = start_worker(url, "apps.basic:app", "-c", "2")
    try:
        assert sent.get(timeout=10) == 3
        assert app.result(by_hand).get(timeout=10) == 42
    finally:
        stop(worker)
        client.close()
        app.close()


def test_delay_and_batches_survive_a_flushed_script_cache(own_server: RedisServer) -> None:
    """The lean paths (one by one, and a batch) fall back to the general one, which reloads the scripts."""
    app = producer(own_server.url)
    client = redis.Redis(HOST, own_server.port)
    try:
        first = app.send_task("apps.basic.add", [1, 2])
        client.script_flush()
        second = app.send_task("apps.basic.add", [3, 4])
        third = app.send_task("apps.basic.add", [5, 6])  # and the lean path works again afterwards
        assert [r.status for r in (first, second, third)] == [State.QUEUED] * 3
        client.script_flush()
        with app.batch():
            batch = [app.send_task("apps.basic.add", [i, i]) for i in range(3)]
        with app.batch():
            batch += [app.send_task("apps.basic.add", [i, i]) for i in range(3)]
        assert all(r.status is State.QUEUED for r in batch)
        assert app.broker.stats(["default"])[0].ready == 9
    finally:
        client.close()
        app.close()


def test_a_script_that_fails_after_a_write_is_not_run_again(url: str, prefix: str) -> None:
    """Only NOSCRIPT (the script never ran) sends a call down the general path to run again. A batch
    whose script stops half-way (here a key of the wrong type, written by someone else) raises a
    clear error, and what it wrote before the error is written once, not twice."""
    app = producer(url)
    client = redis.Redis(HOST, PORT)
    try:
        app.send_task("apps.basic.add", [0, 0])
        client.set(f"{prefix}:{{other}}:p0", "not a stream")
        with pytest.raises(chute.BrokerError, match="WRONGTYPE"):
            with app.batch():
                app.send_task("apps.basic.add", [1, 1])
                app.send_task("apps.basic.add", [2, 2], queue="other")
        assert client.xlen(f"{prefix}:{{default}}:p0") <= 2
    finally:
        client.close()
        app.close()


def test_async_sends_survive_a_flushed_script_cache(own_server: RedisServer) -> None:
    """The asyncio side packs commands with hiredis; a NOSCRIPT reply makes redis.asyncio load the
    script again (SCRIPT LOAD, a two-word command name) and send once more."""
    app = producer(own_server.url)

    async def main() -> list[State]:
        first = await app.send_task_async("apps.basic.add", [1, 2])
        many = await app.send_many_async([chute.Signature("apps.basic.add", (i, i)) for i in range(3)])
        client = redis.Redis(HOST, own_server.port)
        client.script_flush()
        client.close()
        second = await app.send_task_async("apps.basic.add", [3, 4])
        more = await app.send_many_async([chute.Signature("apps.basic.add", (i, i)) for i in range(3)])
        states = [await r.status_async() for r in (first, *many, second, *more)]
        await app.aclose()
        return states

    try:
        assert asyncio.run(main()) == [State.QUEUED] * 8
        assert app.broker.stats(["default"])[0].ready == 8
    finally:
        app.close()


def test_connecting_reads_no_package_metadata(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py looks its own version up in the installed packages' metadata on a process's first
    connection unless told it (4-10 ms of every producer's start); chute tells it, sync and async."""
    import importlib.metadata

    def refuse(name: str) -> str:
        raise AssertionError(f"looked up the version of {name!r} in the package metadata")

    monkeypatch.setattr(importlib.metadata, "version", refuse)
    app = producer(url)

    async def send_async() -> State:
        handle = await app.send_task_async("apps.basic.add", [3, 4])
        state = await handle.status_async()
        await app.aclose()
        return state

    try:
        assert app.send_task("apps.basic.add", [1, 2]).status is State.QUEUED  # the general path's first call
        assert app.send_task("apps.basic.add", [2, 3]).status is State.QUEUED  # the lean path's
        assert asyncio.run(send_async()) is State.QUEUED
        assert app.broker.stats(["default"])[0].ready == 3
    finally:
        app.close()


def test_bad_urls_and_an_unreachable_server_give_clear_errors() -> None:
    with pytest.raises(InvalidURL, match="prefix"):
        chute.App("redis://127.0.0.1:6379/0?prefix=a{b}")
    with pytest.raises(InvalidURL, match="unknown option"):
        chute.App("redis://127.0.0.1:6379/0?colour=blue")
    app = producer(f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        app.send_task("apps.basic.add", [1, 2])
    assert time.monotonic() - t0 < 5
    assert "s3cret" not in str(info.value) and "***" in str(info.value)


# -- a Redis server of the test's own -----------------------------------------------------------------
def test_a_password_and_a_database_number_on_the_lean_path_too(tmp_path: Path) -> None:
    """delay()'s own sockets authenticate and select the URL's database as redis-py does; a server
    that dropped them (restarted) costs a fallback, not an error; a wrong password is a clear error."""
    server = RedisServer(tmp_path, "--requirepass", "s3cret-pw", password="s3cret-pw")
    server.start()
    port = server.port
    url = f"redis://:s3cret-pw@127.0.0.1:{port}/3"
    app = producer(url)
    try:
        ids = [app.send_task("apps.basic.add", [i, i]).id for i in range(5)]
        client = redis.Redis("127.0.0.1", port, password="s3cret-pw", db=3)
        assert sum(client.xlen(k) for k in client.scan_iter(match="chute:{default}:p*")) == 5
        assert app.broker._server.lean._idle, "the lean path was not used"  # type: ignore[attr-defined]
        client.client_kill_filter(_type="normal", skipme=True)  # drop every other connection, ours included
        ids.append(app.send_task("apps.basic.add", [9, 9]).id)  # a dropped idle socket: the general path
        assert sum(client.xlen(k) for k in client.scan_iter(match="chute:{default}:p*")) == 6
        assert all(app.result(i).status is State.QUEUED for i in ids)
        client.close()
        wrong = producer(f"redis://:wrong@127.0.0.1:{port}/3")
        with pytest.raises(chute.BrokerError, match="refused the credentials") as refused:
            wrong.send_task("apps.basic.add", [1, 1])
        assert not isinstance(refused.value, chute.BrokerUnavailable) and "wrong" not in str(refused.value)
        assert "wrong" not in repr(wrong) and "***" in repr(wrong)
        wrong.close()
    finally:
        app.close()
        server.stop()


@pytest.mark.timing
def test_the_lean_path_sends_a_large_body_whole_and_gives_up_on_a_stalled_server(own_server: RedisServer) -> None:
    """delay()'s own non-blocking sockets: a body larger than the socket's send buffer goes out
    whole; a server that stops answering (SIGSTOP) is a BrokerUnavailable after the 3 s socket
    timeout, saying the call may have run, and once the server resumes the message is there once."""
    server, port = own_server, own_server.port
    app = chute.App(server.url, max_message_size=8 << 20)
    app.task(name="apps.basic.add")(lambda a, b: a + b)
    client = redis.Redis("127.0.0.1", port)
    try:
        for i in range(2):  # the first to a queue goes the general way, the next loads the lean path's script
            app.send_task("apps.basic.add", [i, i])
        assert app.broker._server.lean._idle, "the lean path was not used"  # type: ignore[attr-defined]
        big = "x" * (3 << 20)
        first = app.send_task("apps.basic.add", [big, ""])
        got = app.broker.fetch(["default"], 10, 30, 1)
        assert [d.id for d in got][2:] == [first.id] and big.encode() in got[2].body
        app.broker.ack(got)
        server.signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(BrokerUnavailable, match="may or may not have been carried out"):
                app.send_task("apps.basic.add", [1, 2])  # sent whole, never answered
            assert 2.5 < time.monotonic() - t0 < 6
            t0 = time.monotonic()
            with pytest.raises(BrokerUnavailable, match="may or may not have been carried out"):
                app.send_task("apps.basic.add", ["y" * (7 << 20), ""])  # more than the socket buffers take
            assert 2.5 < time.monotonic() - t0 < 6
        finally:
            server.signal(signal.SIGCONT)
        # once the server resumed: the whole command ran, once; the half-sent one was dropped with its socket
        wait_for(lambda: app.broker.stats(["default"])[0].ready == 1, timeout=10, what="the sent command to run")
        assert app.send_task("apps.basic.add", [3, 4]).status is State.QUEUED
        assert app.broker.stats(["default"])[0].ready == 2
    finally:
        client.close()
        app.close()


def test_the_lean_enqueue_is_packed_byte_for_byte_as_hiredis_packs_it(url: str) -> None:
    """delay() packs its ENQUEUE call itself, the parts fixed by queue and band once: the bytes must be
    exactly what hiredis's packer writes, for any queue name, band and body."""
    import hiredis

    from chute.brokers.base import Outgoing
    from chute.envelope import new_id

    app = chute.App(url)
    broker: Any = app.broker
    try:
        for queue, priority, body in [("default", 0, b'{"a":1}'), ("\u00e9mails \u2713", 9, b""),
                                      ("q", 5, bytes(range(256)) * 300)]:
            for _ in range(2):  # packed fresh, then from the cache
                m = Outgoing(queue, new_id(), body, priority)
                want = hiredis.pack_command(("EVALSHA", broker._server.enqueue.sha, 2,
                                             broker.keys.stream(queue, priority), broker.keys.record(m.id), m.id,
                                             body, queue))
                assert broker._enqueue_command(m) == want
    finally:
        app.close()


def _send_in_child(app: chute.App, out: Any) -> None:
    idle_at_fork = len(app.broker._server.lean._idle)  # type: ignore[attr-defined]
    sent = app.send_task("apps.basic.add", [3, 3])
    out.put((idle_at_fork, sent.status.value, os.getpid()))


def test_a_forked_child_sends_on_lean_sockets_of_its_own(url: str) -> None:
    """The lean path's idle sockets belong to the process that opened them: a child forked after a
    delay() forgets them at the fork and opens its own (reading the parent's would take its
    replies), and the parent's keep working after the child has exited."""
    import multiprocessing

    app = producer(url)
    try:
        for i in range(2):  # the second goes over the lean path and leaves its socket idle
            app.send_task("apps.basic.add", [i, i])
        assert app.broker._server.lean._idle  # type: ignore[attr-defined]
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        child = ctx.Process(target=_send_in_child, args=(app, out))
        child.start()
        idle_at_fork, state, pid = out.get(timeout=20)
        child.join(10)
        assert child.exitcode == 0 and pid != os.getpid()
        assert idle_at_fork == 0 and state == "queued"
        after = app.send_task("apps.basic.add", [4, 4])
        assert after.status is State.QUEUED
        assert app.broker.stats(["default"])[0].ready == 4
    finally:
        app.close()


def _canned_server(replies: list[bytes]) -> int:
    """A one-connection server that answers each command with the next canned RESP reply; its port."""
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn, srv:
            for reply in replies:
                if not conn.recv(65536):  # one small command, sent whole, per reply
                    return
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return int(srv.getsockname()[1])


def test_the_lean_path_sends_again_only_what_never_ran() -> None:
    """An error reply on chute's own sockets: NOSCRIPT (the script never ran) lets the caller send it
    again through redis-py, which loads it; a server that refuses commands for now (LOADING after a
    restart, BUSY) is an outage, nothing done; any other error is raised as it is, never sent again
    (a script that stopped half-way may have written part of its work). The socket stays usable."""
    from chute.brokers.redis.lean import FastCalls

    port = _canned_server([b"-NOSCRIPT No matching script. Please use EVAL.\r\n",
                           b"-LOADING Redis is loading the dataset in memory\r\n",
                           b"-BUSY Redis is busy running a script.\r\n",
                           b"-ERR user_script:3: WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
                           b"+PONG\r\n"])
    calls = FastCalls(redis.ConnectionPool(host="127.0.0.1", port=port), f"redis://127.0.0.1:{port}/0")
    try:
        assert calls.call("EVALSHA", "0" * 40, 0) is None
        for word in ("LOADING", "BUSY"):
            with pytest.raises(BrokerUnavailable, match=f"{word}.*nothing was done"):
                calls.call("EVALSHA", "0" * 40, 0)
        with pytest.raises(chute.BrokerError, match="WRONGTYPE") as refused:
            calls.call("EVALSHA", "0" * 40, 0)
        assert not isinstance(refused.value, BrokerUnavailable)
        assert calls.call("PING") == b"PONG"  # one socket all along
    finally:
        calls.close()
