"""The wire format: what encodes, what is refused (with the argument named), what decodes."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chute
from chute.envelope import VERSION, Codec, Envelope, WorkflowLink, new_id
from chute.errors import DecodeError, PayloadTooLarge, SerializationError, UnsupportedVersion

pytestmark = pytest.mark.brokers("sqlite")  # the tests that send, send to the embedded broker

ALLOWED = [None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, -0.25, 1e300, "", "é✓ text",
           [], [1, [2, [3]]], (1, 2), {}, {"a": {"b": [None, 1.0]}}, ["mixed", 1, 2.5, None, {"k": True}]]


@pytest.mark.parametrize("codec", ["json", "msgpack"])
@pytest.mark.parametrize("value", ALLOWED, ids=repr)
def test_every_allowed_type_round_trips(codec: str, value: object) -> None:
    c = Codec(codec)  # type: ignore[arg-type]
    env = Envelope(v=VERSION, id=new_id(), name="t", created=1.0, args=[value], kwargs={"k": value})
    c.check_args([value], {"k": value}, "t")
    back = c.decode(c.encode(env))
    expected = list(value) if isinstance(value, tuple) else value  # a tuple arrives as a list
    assert back.args == [expected] and back.kwargs == {"k": expected}


def test_bytes_round_trip_under_msgpack_only() -> None:
    c = Codec("msgpack")
    env = Envelope(v=VERSION, id="x", name="t", created=1.0, args=[b"\x00\xff"])
    c.check_args([b"\x00\xff"], {}, "t")
    assert c.decode(c.encode(env)).args == [b"\x00\xff"]
    with pytest.raises(SerializationError, match=r"args\[0\].*bytes.*msgpack"):
        Codec("json").check_args([b"x"], {}, "t")


def test_pickle_is_not_offered() -> None:
    with pytest.raises(ValueError, match="pickle is never offered"):
        Codec("pickle")  # type: ignore[arg-type]


class Thing:
    pass


recursive: list[object] = []
recursive.append(recursive)

REFUSED = [
    ((Thing(),), {}, r"args\[0\]: Thing is not allowed"),
    ((lambda: 1,), {}, r"args\[0\]: function is not allowed"),
    (({1, 2},), {}, r"args\[0\]: set is not allowed \(send a sorted list\)"),
    ((datetime.now(timezone.utc),), {}, r"args\[0\]: datetime is not allowed \(send value.isoformat"),
    ((float("nan"),), {}, r"args\[0\]: nan is not allowed"),
    ((1, [2, {"deep": float("inf")}]), {}, r"args\[1\]\[1\]\['deep'\]: inf is not allowed"),
    ((), {"when": {"x": Thing()}}, r"kwargs\['when'\]\['x'\]: Thing"),
    ((2**64,), {}, r"args\[0\]: integer .* does not fit in 64 bits"),
    ((1, "a", -(2**63) - 1), {}, r"args\[2\]: integer .* does not fit in 64 bits"),
    (("plain", 2.5, float("-inf")), {}, r"args\[2\]: -inf is not allowed"),
    ((1, 2), {"ok": 1, "bad": float("nan")}, r"kwargs\['bad'\]: nan is not allowed"),
    (({1: "a"},), {}, r"args\[0\]: dict key 1 is a int; keys must be str"),
    ((recursive,), {}, r"args\[0\].*recursive structure"),
]


@pytest.mark.parametrize(("args", "kwargs", "message"), REFUSED, ids=[r[2][:30] for r in REFUSED])
def test_unencodable_arguments_fail_at_delay_naming_the_argument(
        app: chute.App, args: tuple[object, ...], kwargs: dict[str, object], message: str) -> None:
    @app.task
    def target(*a: object, **k: object) -> None:
        pass

    with pytest.raises(SerializationError, match=message) as info:
        target.send(args, kwargs)
    assert "test_envelope" in str(info.value)  # names the task too
    assert app.broker.stats() == []  # nothing was enqueued


def test_open_file_is_refused(app: chute.App, tmp_path: Path) -> None:
    @app.task
    def target(f: object) -> None:
        pass

    with open(tmp_path / "f", "w") as handle, pytest.raises(SerializationError, match="TextIOWrapper"):
        target.delay(handle)


def test_nesting_bomb_is_refused(app: chute.App) -> None:
    @app.task
    def target(x: object) -> None:
        pass

    bomb: object = 1
    for _ in range(100):
        bomb = [bomb]
    with pytest.raises(SerializationError, match="nested deeper than 32"):
        target.delay(bomb)


def test_payload_over_the_limit_is_refused_before_any_broker_io(tmp_path: Path) -> None:
    app = chute.App(f"sqlite:///{tmp_path}/x.db", max_message_size=10_000)

    @app.task
    def target(s: str) -> None:
        pass

    with pytest.raises(PayloadTooLarge, match=r"over the limit of 10,000"):
        target.delay("x" * 10_000)
    assert app.broker.stats() == []
    target.delay("x" * 9_500)  # under the limit fits
    assert app.broker.stats()[0].ready == 1


def test_default_limit_is_one_mebibyte(app: chute.App) -> None:
    @app.task
    def target(s: str) -> None:
        pass

    overhead = len(app.codec.encode(Envelope(v=1, id=new_id(), name=target.name, created=0.0,
                                                    args=[""], max_retries=3))) + 32
    target.delay("x" * ((1 << 20) - overhead))
    with pytest.raises(PayloadTooLarge):
        target.delay("x" * (1 << 20))
    assert app.broker.stats()[0].ready == 1


def test_json_envelope_is_plain_documented_json() -> None:
    env = Envelope(v=VERSION, id="abc", name="app.send_report", created=1700000000.5, args=[7],
                   kwargs={"to": "a@b"}, priority=5, workflow=WorkflowLink("wf1", "charge"))
    doc = json.loads(Codec("json").encode(env))
    assert doc == {"v": 1, "id": "abc", "name": "app.send_report", "created": 1700000000.5, "args": [7],
                   "kwargs": {"to": "a@b"}, "priority": 5, "workflow": {"id": "wf1", "step": "charge"}}


def test_a_hand_written_minimal_message_decodes() -> None:
    env = Codec("json").decode(b'{"v": 1, "id": "x1", "name": "app.add", "created": 0, "args": [1, 2]}')
    assert (env.name, env.args, env.kwargs, env.queue, env.attempt, env.priority) == (
        "app.add", [1, 2], {}, "default", 0, 0)


def test_either_codec_decodes_both_formats() -> None:
    env = Envelope(v=VERSION, id="x", name="t", created=1.0, args=[1])
    for writer in ("json", "msgpack"):
        data = Codec(writer).encode(env)  # type: ignore[arg-type]
        for reader in ("json", "msgpack"):
            assert Codec(reader).decode(data) == env  # type: ignore[arg-type]


@pytest.mark.parametrize(("data", "error", "message"), [
    (b"", DecodeError, "empty"),
    (b"\x00\x01garbage\xff", DecodeError, "not a chute JSON envelope"),
    (b"\x85\x01garbage\xff", DecodeError, "not a chute msgpack envelope"),
    (b'{"v": 1, "id": "x", "name": "t", "created": 0, "args": [1, 2', DecodeError, "not a chute JSON"),
    (b'{"v": 2, "id": "x", "name": "t", "created": 0}', UnsupportedVersion, "version 2 is not supported"),
    (b'{"v": 99, "totally": "different"}', UnsupportedVersion, "version 99"),
    (b'{"id": "x", "name": "t", "created": 0}', DecodeError, "missing required field `v`"),
    (b'{"v": 1, "id": "x", "name": "t", "created": 0, "args": "x"}', DecodeError, "Expected `array`"),
    (b'{"v": 1, "id": 5, "name": "t", "created": 0}', DecodeError, "Expected `str`"),
    (b"[" * 100_000 + b"]" * 100_000, DecodeError, "not a chute JSON"),
])
def test_bad_bytes_raise_decode_errors(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        Codec("json").decode(data)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    env = Codec("json").decode(b'{"v": 1, "id": "x", "name": "t", "created": 0, "future_field": [1]}')
    assert env.id == "x"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_decoding_arbitrary_bytes_never_raises_anything_else(data: bytes) -> None:
    try:
        Codec("json").decode(data)
    except DecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text()
                    | st.floats(allow_nan=False, allow_infinity=False),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                    max_leaves=20))
def test_generated_json_values_round_trip(value: object) -> None:
    c = Codec("json")
    c.check_args([value], {}, "t")
    back = c.decode(c.encode(Envelope(v=1, id="x", name="t", created=0.0, args=[value]))).args[0]
    assert back == value or (isinstance(value, float) and math.isclose(back, value))


def test_ids_are_unique_and_time_ordered() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids) and all(len(i) == 32 for i in ids)
    assert ids[0][:12] <= ids[-1][:12]


def test_envelope_struct_is_stable() -> None:
    assert [f for f in Envelope.__struct_fields__] == [
        "v", "id", "name", "created", "kind", "queue", "args", "kwargs", "headers", "attempt", "max_retries",
        "eta", "priority", "expires", "idempotency_key", "workflow", "trace_id"]
    assert msgspec.json.decode(b'{"id": "w", "step": "s"}', type=WorkflowLink) == WorkflowLink("w", "s")
