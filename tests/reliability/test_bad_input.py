"""Bad input on the wire (R13, R15) and graceful shutdown timings (R12), against real worker processes."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import msgspec
import pytest

import chute
from chute.brokers.base import Outgoing
from helpers import start_worker, stop, wait_for
from reliability.history import read_ledger, scale

pytestmark = [pytest.mark.slow, pytest.mark.timeout(scale(240, 3600))]


def fuzzed(rng: random.Random, valid: bytes, i: int) -> bytes:
    kind = i % 8
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 200))
    if kind == 1:
        return valid[: rng.randrange(1, len(valid))]  # truncated JSON
    if kind == 2:
        return msgspec.msgpack.encode(json.loads(valid))[: rng.randrange(1, 40)]  # truncated msgpack
    if kind == 3:
        return valid.replace(b'"v":1', b'"v":%d' % rng.randrange(2, 99))  # another version
    if kind == 4:
        doc = json.loads(valid)
        doc.pop(rng.choice(["v", "id", "name", "created"]))  # a required field missing
        return json.dumps(doc).encode()
    if kind == 5:
        doc = json.loads(valid)
        doc[rng.choice(["args", "kwargs", "attempt", "name"])] = rng.choice([{"x": 1}, "str", 3.5, [None]])
        return json.dumps(doc).encode()  # wrong types
    if kind == 6:
        return b"[" * 50_000 + b"]" * 50_000  # a nesting bomb
    doc = json.loads(valid)
    doc["name"] = f"no.such.task.{i}"  # an unknown task
    return json.dumps(doc).encode()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_fuzzed_messages_between_valid_ones(url: str, ledger: Path) -> None:
    rng = random.Random(int(os.environ.get("CHUTE_CHAOS_SEED", "11")))
    app = chute.App(url)
    work = app.task(name="apps.chaos.work")(lambda ms: None)
    valid = app.codec.encode(app.producer.envelope(work, (0,), {}, {}, time.time())[0])
    ids: set[str] = set()
    bad: list[Outgoing] = []
    for i in range(scale(2000, 10_000)):
        ids |= {r.id for r in app.send_many([work.s(0)])}
        if i % 10 == 0:
            bad.append(Outgoing("default", f"fuzz-{i}", fuzzed(rng, valid, i // 10)))
    app.broker.publish(bad)
    huge = Outgoing("default", "huge", b'{"v":1,"id":"huge","name":"apps.chaos.work","created":0,"args":["'
                    + b"x" * (10 << 20) + b'"]}')
    app.broker.publish([huge])  # 10 MiB written raw, past the producer's limit
    cap = len(bad) + 1000  # dead_letters() returns at most `limit`: room for both rounds
    w = start_worker(url, "apps.chaos:app", "-c", "4", CHUTE_LEDGER=str(ledger))
    try:
        wait_for(lambda: set(read_ledger(ledger)) >= ids, timeout=120, what="every valid task")
        wait_for(lambda: len(app.broker.dead_letters(limit=cap)) == len(bad) + 1, timeout=30, what="the DLQ")
        start_rss = rss_kb(w.pid)
        more = {r.id for r in app.send_many([work.s(0) for _ in range(1000)])}
        app.broker.publish([Outgoing("default", f"fuzz2-{i}", fuzzed(rng, valid, i)) for i in range(200)])
        wait_for(lambda: set(read_ledger(ledger)) >= more, timeout=60, what="the second round")
        wait_for(lambda: len(app.broker.dead_letters(limit=cap)) == len(bad) + 201, timeout=30, what="DLQ 2")
        growth_mb = (rss_kb(w.pid) - start_rss) / 1024
        assert w.poll() is None  # never restarted
    finally:
        stop(w)
    dead = {d.id: d for d in app.broker.dead_letters(limit=cap)}
    for o in bad:
        kind = dead[o.id].reason.split(":")[0]
        if kind in ("decode_error", "unsupported_version", "unknown_task"):
            assert dead[o.id].body == o.body  # refused before running: the bytes are kept as they came
        else:  # a well-formed envelope with arguments the task rejects: a task failure, retried, then dead
            assert kind == "TypeError", dead[o.id].reason
    assert dead["huge"].reason.startswith("too_large: 10,485,") and len(dead["huge"].body) > 10 << 20
    from collections import Counter

    reasons = Counter(d.reason.split(":")[0] for d in dead.values())
    print(f"{len(ids)} valid + {len(bad)} fuzzed + 1 of 10 MiB, then {len(more)} valid + 200 fuzzed: every valid "
          f"one ran, {len(dead)} dead-lettered {dict(reasons)}; worker RSS {start_rss / 1024:.1f} MB, "
          f"grew {growth_mb:+.1f} MB in the second round, never restarted")
    assert growth_mb < 20, f"worker RSS grew {growth_mb:.1f} MB"


def running(starts: Path) -> int:
    """How many sleep_then calls have begun (the tasks say so themselves: a broker's in-flight count,
    like RabbitMQ's STARTED records, may come from a heartbeat a second or two old)."""
    return len(starts.read_text().splitlines()) if starts.exists() else 0


def test_sigterm_with_a_long_grace_finishes_everything_in_flight(url: str, tmp_path: Path) -> None:
    log, starts = tmp_path / "ran.log", tmp_path / "starts.log"
    app = chute.App(url)
    slow = app.task(name="apps.basic.sleep_then")(lambda seconds, value: None)
    results = app.send_many([slow.s(2.0, i) for i in range(100)])
    w = start_worker(url, "apps.basic:app", "-c", "100", "--prefetch", "100", "--grace", "10",
                     CHUTE_TEST_LOG=str(log), CHUTE_TEST_STARTS=str(starts))
    wait_for(lambda: running(starts) == 100, timeout=20, what="100 running")
    time.sleep(0.3)
    t0 = time.monotonic()
    w.send_signal(signal.SIGTERM)
    assert w.wait(15) == 0
    assert time.monotonic() - t0 < 12
    assert all(r.status is chute.State.SUCCEEDED for r in results)
    assert len(log.read_text().splitlines()) == 100  # none ran twice, none redelivered


def test_sigterm_with_a_short_grace_releases_at_once(url: str, tmp_path: Path) -> None:
    log, starts = tmp_path / "ran.log", tmp_path / "starts.log"
    app = chute.App(url)
    slow = app.task(name="apps.basic.sleep_then")(lambda seconds, value: None)
    results = app.send_many([slow.s(3.0, i) for i in range(20)])
    w = start_worker(url, "apps.basic:app", "-c", "20", "--prefetch", "20", "--grace", "1",
                     CHUTE_TEST_LOG=str(log), CHUTE_TEST_STARTS=str(starts))
    wait_for(lambda: running(starts) == 20, timeout=20, what="20 running")
    w.send_signal(signal.SIGTERM)
    assert w.wait(10) == 0
    t0 = time.monotonic()
    # released, not left to the lease (30 s); RabbitMQ's count may trail the requeue by a moment
    wait_for(lambda: app.broker.stats(["default"])[0].ready == 20, timeout=2, what="20 released")
    w2 = start_worker(url, "apps.basic:app", "-c", "20", CHUTE_TEST_LOG=str(log))
    try:
        wait_for(lambda: app.broker.stats(["default"])[0].ready == 0, timeout=5, what="taken within 5 s")
        assert time.monotonic() - t0 < 5
        assert [r.get(timeout=20) for r in results] == list(range(20))
    finally:
        stop(w2)
