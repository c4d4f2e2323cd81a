"""HMAC signing: tampered and unsigned messages are dead-lettered, keys rotate (R18, short form)."""

from __future__ import annotations

import random

import pytest

import chute
from chute.brokers.base import Outgoing
from chute.signing import MARK
from helpers import wait_for, worker_thread
from reliability.history import scale

pytestmark = pytest.mark.slow

NEW, OLD = {"k2": "new-secret-0123456789"}, {"k1": "old-secret-0123456789"}


def make(url: str, keys: dict[str, str], ran: list[int]) -> chute.App:
    app = chute.App(url, signing_keys=keys)
    app.task(name="f")(lambda i: ran.append(i))
    return app


def test_tampered_and_unsigned_messages_are_dead_lettered(url: str) -> None:
    ran, rng = [], random.Random(3)
    app = make(url, NEW, ran)
    f = app.tasks["f"]
    n = scale(1000, 10_000)  # valid and tampered; a tenth as many unsigned
    valid = [f.delay(i) for i in range(n)]
    tampered = []
    for i in range(n, 2 * n):  # one flipped bit anywhere in the signed bytes or the signature
        body = bytearray(app.codec.encode(app.producer.envelope(f, (i,), {}, {}, 0.0)[0]))
        bit = rng.randrange(len(body) * 8)
        body[bit // 8] ^= 1 << (bit % 8)
        tampered.append(Outgoing("default", f"t{i}", bytes(body)))
    plain = chute.App(url)
    plain_f = plain.task(name="f")(lambda i: None)
    unsigned = [Outgoing("default", f"u{i}", plain.codec.encode(plain.producer.envelope(plain_f, (i,), {}, {}, 0.0)[0]))
                for i in range(2 * n, 2 * n + n // 10)]
    assert MARK in app.codec.encode(app.producer.envelope(f, (0,), {}, {}, 0.0)[0])
    app.broker.publish(tampered + unsigned)
    with worker_thread(app, concurrency=4):
        wait_for(lambda: all(r.ready() for r in valid) and len(app.broker.dead_letters(limit=5 * n)) == n + n // 10,
                 timeout=scale(60, 900), what="all settled")
    assert sorted(ran) == list(range(n))
    dead = app.broker.dead_letters(limit=5 * n)
    assert {d.id for d in dead} == {o.id for o in tampered + unsigned}
    assert all(d.reason.startswith("bad_signature") for d in dead)  # no tampered one ran, none was lost
    assert {d.body for d in dead} == {o.body for o in tampered + unsigned}
    print(f"{n} signed ran once each; {n} tampered and {n // 10} unsigned: {len(dead)} dead-lettered "
          f"bad_signature, none ran")


def test_key_rotation(url: str) -> None:
    ran: list[int] = []
    old_producer = make(url, OLD, [])
    before = old_producer.tasks["f"].delay(1)
    rotating = make(url, {**NEW, **OLD}, ran)  # new key first: signs with k2, still accepts k1
    during = rotating.tasks["f"].delay(2)
    with worker_thread(rotating):
        assert before.get(timeout=10) is None and during.get(timeout=10) is None
    late = old_producer.tasks["f"].delay(3)  # a producer still on the old key, after k1 was removed
    retired = make(url, NEW, ran)
    with worker_thread(retired):
        wait_for(lambda: retired.broker.dead_letters(), what="the old-key message dead-lettered")
    (dead,) = retired.broker.dead_letters()
    assert dead.id == late.id and "signed with key 'k1', which this App does not have" in dead.reason
    assert sorted(ran) == [1, 2]


@pytest.mark.parametrize(("keys", "message"), [
    ({}, "at least one key"),
    ({"k": "short"}, "too short"),
    ({"a:b": "x" * 20}, "without ':'"),
])
def test_bad_keys_are_refused(keys: dict[str, str], message: str) -> None:
    with pytest.raises(chute.ConfigurationError, match=message):
        chute.App("memory://", signing_keys=keys)
