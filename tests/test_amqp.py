"""The RabbitMQ broker with real worker processes: kills, drains, bad input, interop.

Each test runs in a vhost of its own on the shared server (127.0.0.1:5672), deleted afterwards; its
producers and workers share results through a SQLite file of the test (CHUTE_RESULTS_URL, set by the
`url` fixture). The server-restart scenario is in tests/test_restart.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

import amqp_server
import chute
from chute import State
from chute.brokers.amqp import AMQPBroker
from chute.brokers.base import Outgoing
from chute.errors import BrokerUnavailable
from conftest import broker_url
from helpers import env_for, free_port, producer, ran, start_worker, stop, wait_for

pytestmark = [pytest.mark.brokers("amqp"), pytest.mark.timeout(180)]


@pytest.fixture
def vhost() -> Iterator[str]:
    with amqp_server.vhost() as name:
        yield name


def plain(url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(url))


def test_sigkill_mid_task_runs_again_on_another_worker(url: str, tmp_path: Path) -> None:
    app = producer(url)
    log = tmp_path / "ran.log"
    first = start_worker(url, "apps.basic:app", "-c", "1", CHUTE_TEST_LOG=str(log))
    second = None
    try:
        r = app.send_task("apps.basic.sleep_then", [1.0, 42])
        wait_for(lambda: r.status is State.STARTED, timeout=20, what="task started")
        first.send_signal(signal.SIGKILL)
        first.wait(5)
        killed_at = time.monotonic()
        second = start_worker(url, "apps.basic:app", "-c", "1", CHUTE_TEST_LOG=str(log))
        assert r.get(timeout=30) == 42
        assert time.monotonic() - killed_at < 20  # RabbitMQ requeued it when the connection died, not a lease later
        assert [p for _, p in ran(log)] == [second.pid]  # the killed run never finished
        wait_for(lambda: app.broker.stats(["default"])[0].in_flight == 0, what="nothing held")
        (s,) = app.broker.stats(["default"])
        assert (s.ready, s.dead) == (0, 0)
    finally:
        for p in (first, second):
            if p is not None:
                stop(p)
        app.close()


@pytest.mark.slow
def test_sigterm_drains_and_releases_the_prefetched(url: str, tmp_path: Path) -> None:
    app = producer(url)
    log = tmp_path / "ran.log"
    results = app.send_many([chute.Signature("apps.basic.sleep_then", (0.5, i)) for i in range(40)])
    w = start_worker(url, "apps.basic:app", "-c", "4", "--prefetch", "16", "--grace", "10", CHUTE_TEST_LOG=str(log))
    try:
        wait_for(lambda: len(ran(log)) >= 4, timeout=30, what="some tasks done")
        assert stop(w, signal.SIGTERM) == 0
        done = {v for v, _ in ran(log)}
        assert done == {i for i, r in enumerate(results) if r.status is State.SUCCEEDED}
        (s,) = app.broker.stats(["default"])
        assert s.ready == 40 - len(done)  # the prefetched came back at once; the finished were acked
        w = start_worker(url, "apps.basic:app", "-c", "8", CHUTE_TEST_LOG=str(log))
        assert sorted(r.get(timeout=60) for r in results) == list(range(40))
        assert sorted(v for v, _ in ran(log)) == list(range(40))  # each ran exactly once
    finally:
        stop(w)
        app.close()


def test_undecodable_and_unknown_messages_go_to_the_dead_letter_queue(url: str) -> None:
    app = producer(url)
    sent = [app.send_task("apps.basic.add", [i, 1]) for i in range(200)]
    conn = plain(url)
    ch = conn.channel()
    ch.confirm_delivery()
    bad = {"raw-1": b"\xff\xfe not json", "raw-2": b"", "raw-3": b'{"v": 1, "id": "raw-3"',
           "raw-4": json.dumps({"v": 7, "id": "raw-4", "name": "apps.basic.add", "created": 0}).encode(),
           "raw-5": json.dumps({"v": 1, "id": "raw-5", "name": "no.such.task", "created": 0}).encode()}
    for mid, body in bad.items():  # written raw into chute's queue, past every producer check
        ch.basic_publish("", "default", body, pika.BasicProperties(message_id=mid, delivery_mode=2))
    conn.close()
    w = start_worker(url, "apps.basic:app", "-c", "4")
    try:
        assert [r.get(timeout=30) for r in sent] == [i + 1 for i in range(200)]
        wait_for(lambda: len(app.broker.dead_letters("default")) == len(bad), timeout=30, what="the DLQ")
        dead = {d.id: d for d in app.broker.dead_letters("default")}
        assert {mid: dead[mid].body for mid in bad} == bad  # bytes kept as they came
        reasons = {mid: dead[mid].reason.split(":")[0] for mid in bad}
        assert reasons == {"raw-1": "decode_error", "raw-2": "decode_error", "raw-3": "decode_error",
                           "raw-4": "unsupported_version", "raw-5": "unknown_task"}
        assert w.poll() is None
        (s,) = app.broker.stats(["default"])
        assert (s.ready, s.dead) == (0, len(bad))
    finally:
        stop(w)
        app.close()


def test_plain_pika_producer_and_consumer_speak_the_documented_envelope(url: str) -> None:
    app = producer(url)
    # chute -> plain pika: the body is the JSON envelope, the message id its id
    sent = app.send_task("apps.basic.add", [1, 2], queue="interop-out")
    conn = plain(url)
    ch = conn.channel()
    method, props, body = ch.basic_get("interop-out", auto_ack=True)
    assert method is not None and props.message_id == sent.id and props.delivery_mode == 2
    env = json.loads(body)
    assert (env["v"], env["id"], env["name"], env["args"], env["queue"]) == (1, sent.id, "apps.basic.add", [1, 2],
                                                                             "interop-out")
    # plain pika -> a chute worker: declare the queue as chute does (or publish into an existing one)
    broker = app.broker
    assert isinstance(broker, AMQPBroker)
    ch.queue_declare("chute.dead.default", durable=True)
    ch.queue_declare("default", durable=True, arguments=broker.work_queue_args("default"))
    ch.confirm_delivery()
    by_hand = os.urandom(16).hex()
    doc = {"v": 1, "id": by_hand, "name": "apps.basic.add", "created": time.time(), "args": [20, 22]}
    ch.basic_publish("", "default", json.dumps(doc).encode(),
                     pika.BasicProperties(message_id=by_hand, delivery_mode=2, content_type="application/json"))
    conn.close()
    w = start_worker(url, "apps.basic:app", "-c", "2")
    try:
        assert app.result(by_hand).get(timeout=30) == 42
    finally:
        stop(w)
        app.close()


@pytest.mark.timing
def test_delays_land_within_100_ms_of_their_eta_and_never_before(url: str) -> None:
    app = producer(url)
    broker = app.broker
    now = time.time()
    etas = {f"d{i}": now + 0.3 + (i * 0.137) % 2.5 for i in range(25)}  # mixed delays, none blocking another
    broker.publish([Outgoing("delays", mid, b"x", eta=eta) for mid, eta in sorted(etas.items(), key=lambda x: -x[1])])
    late: dict[str, float] = {}
    deadline = time.monotonic() + 10
    while len(late) < len(etas) and time.monotonic() < deadline:
        for d in broker.fetch(["delays"], 100, 30, 0.5):
            late[d.id] = time.time() - etas[d.id]
            broker.ack([d])
    assert set(late) == set(etas)
    assert min(late.values()) >= 0, late  # never before due
    assert max(late.values()) < 0.1, late
    app.close()


def test_an_expired_message_is_not_run(url: str, tmp_path: Path) -> None:
    app = producer(url)
    log = tmp_path / "ran.log"
    old = app.send_task("apps.basic.sleep_then", [0, 1], expires=0.2)
    fresh = app.send_task("apps.basic.sleep_then", [0, 2], expires=60)
    time.sleep(0.4)  # let the first one expire before any worker exists
    w = start_worker(url, "apps.basic:app", "-c", "2", CHUTE_TEST_LOG=str(log))
    try:
        assert fresh.get(timeout=30) == 2
        wait_for(lambda: old.status is State.FAILED, timeout=30, what="expired task recorded")
        info = old.info()
        assert info is not None and info.error is not None and info.error.type.endswith("TaskExpired")
        assert [v for v, _ in ran(log)] == [2]
    finally:
        stop(w)
        app.close()


def test_default_results_are_shared_by_separate_processes(vhost: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHUTE_RESULTS_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # the per-user folder, for this test
    url = amqp_server.url(vhost)
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    code = ("import chute; app = chute.App({url!r}); add = app.task(name='apps.basic.add')(lambda a, b: 0); "
            "print(add.delay(2, 3).id)")
    sent = subprocess.run([sys.executable, "-c", code.format(url=url)], cwd=str(readonly), env=env_for(url),
                          check=True, capture_output=True, text=True).stdout.strip()
    w = start_worker(url, "apps.basic:app", "-c", "2")
    try:
        app = chute.App(url)
        assert app.result(sent).get(timeout=30) == 5
        assert list((tmp_path / "data" / "chute").glob("rabbitmq-127.0.0.1-5672-*.db"))
        app.close()
    finally:
        stop(w)


def test_results_in_redis_are_shared_by_processes_and_show_started(vhost: str, tmp_path: Path) -> None:
    url = amqp_server.url(vhost)
    log = tmp_path / "ran.log"
    with broker_url("redis", tmp_path) as results:
        app = chute.App(url, results=results)
        slow = app.task(name="apps.basic.sleep_then")(lambda seconds, value: None)
        w = start_worker(url, "apps.basic:app", "-c", "2", CHUTE_RESULTS_URL=results, CHUTE_TEST_LOG=str(log))
        try:
            r = slow.delay(1.0, 7)
            wait_for(lambda: r.status is State.STARTED, timeout=20, what="STARTED, written by Redis itself")
            assert r.get(timeout=20) == 7
            record = app.results.get(r.id)
            assert record is not None and record.state is State.SUCCEEDED
        finally:
            stop(w)
            app.close()


def test_quorum_queues_deliver_delay_and_dead_letter(url: str) -> None:
    app = producer(url + "?queue_type=quorum")
    broker = app.broker
    # b's delay outlasts the first fetch, and a's lease b's delay, however busy the machine
    broker.publish([Outgoing("q", "a", b"1"), Outgoing("q", "b", b"2", eta=time.time() + 1.5)])
    (a,) = broker.fetch(["q"], 10, 3.0, 0)
    assert (a.id, a.deliveries) == ("a", 1)
    (b,) = broker.fetch(["q"], 10, 30, 5)
    assert b.id == "b"
    again = broker.fetch(["q"], 10, 30, 6)  # a's lease ran out: requeued, counted by RabbitMQ
    assert [(d.id, d.deliveries) for d in again] == [("a", 2)]
    assert broker.dead_letter(again[0], "poison")
    assert broker.ack([b]) == 1
    assert [(d.id, d.reason) for d in broker.dead_letters("q")] == [("a", "poison")]
    app.close()


def test_an_unreachable_server_fails_fast_and_masks_the_password() -> None:
    app = chute.App(f"amqp://guest:s3cret@127.0.0.1:{free_port()}/", results="memory://")
    add = app.task(name="apps.basic.add")(lambda a, b: 0)
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        add.delay(1, 2)
    assert time.monotonic() - t0 < 5
    assert "s3cret" not in str(info.value) and "***" in str(info.value)
    app.close()


def test_a_queue_declared_with_other_arguments_is_a_clear_error(url: str) -> None:
    conn = plain(url)
    conn.channel().queue_declare("clash", durable=True)  # no dead-letter exchange, no priorities
    conn.close()
    app = producer(url)
    with pytest.raises(chute.errors.BrokerError, match="'clash' exists with other arguments"):
        app.broker.fetch(["clash"], 10, 30, 0)
    with pytest.raises(chute.errors.BrokerError, match="'clash' exists with other arguments"):
        app.send_task("apps.basic.add", [1, 2], queue="clash")
    app.broker.publish([Outgoing("fine", "m1", b"x")])  # the connection recovers for other queues
    assert [d.id for d in app.broker.fetch(["fine"], 10, 30, 0)] == ["m1"]
    app.close()
