"""The versioned message envelope (docs/protocol.md) and its two codecs, JSON and msgpack.

A message is one msgspec-encoded `Envelope`. Brokers store and move its bytes without looking
inside; only producers encode and only workers decode, once each.
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from .errors import DecodeError, PayloadTooLarge, SerializationError, UnsupportedVersion

if TYPE_CHECKING:
    from .signing import Signer

VERSION = 1
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20  # 1 MiB
MAX_NESTING = 32

CodecName = Literal["json", "msgpack"]


class WorkflowLink(msgspec.Struct, omit_defaults=True, frozen=True):
    """Places a message inside a workflow: the workflow's id and this step's name."""

    id: str
    step: str
    parent: str | None = None


class Envelope(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One message: a task call or an event. Field names are the wire names."""

    v: int
    id: str
    name: str
    created: float
    kind: str = "task"  # "task" or "event"
    queue: str = "default"
    args: list[Any] = msgspec.field(default_factory=list)
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    attempt: int = 0  # earlier attempts: 0 on the first run, n after n retries
    max_retries: int = 0
    eta: float | None = None  # unix seconds; not before
    priority: int = 0  # 0..9, higher first
    expires: float | None = None  # unix seconds; not after
    idempotency_key: str | None = None
    workflow: WorkflowLink | None = None
    trace_id: str | None = None


class _VersionOnly(msgspec.Struct):
    v: int


def new_id() -> str:
    """A 32-hex-digit id that sorts by creation time (48-bit milliseconds + 80 random bits)."""
    return ((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10)).hex()


_INT_RANGE = range(-(1 << 63), 1 << 64)


def _plain(value: Any) -> bool:
    """True for a scalar that encodes as it is (the common argument), checked without building a path."""
    kind = type(value)
    if kind is int:
        return value in _INT_RANGE
    if kind is float:
        return math.isfinite(value)
    return kind is str or kind is bool or value is None


def check_encodable(value: Any, path: str, *, allow_bytes: bool = False) -> None:
    """Raise SerializationError naming `path` if `value` would not survive the wire unchanged.

    Allowed: None, bool, int (64-bit), finite float, str, list, tuple (arrives as a list) and
    dict with str keys; bytes too under msgpack. Everything else is refused rather than silently
    converted, so what a task receives is what the producer sent.
    """
    _check(value, path, allow_bytes, 0, set())


def _check(value: Any, path: str, allow_bytes: bool, depth: int, seen: set[int]) -> None:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return
    if kind is int:
        if not -(1 << 63) <= value < (1 << 64):
            raise SerializationError(f"{path}: integer {value} does not fit in 64 bits; send it as a str")
        return
    if kind is float:
        if not math.isfinite(value):
            raise SerializationError(f"{path}: {value!r} is not allowed (JSON has no NaN or Infinity)")
        return
    if depth >= MAX_NESTING:
        raise SerializationError(f"{path}: nested deeper than {MAX_NESTING} levels (a recursive structure?)")
    if kind is list or kind is tuple:
        if id(value) in seen:
            raise SerializationError(f"{path}: recursive structure (contains itself)")
        seen.add(id(value))
        for i, item in enumerate(value):
            if not _plain(item):
                _check(item, f"{path}[{i}]", allow_bytes, depth + 1, seen)
        seen.discard(id(value))
        return
    if kind is dict:
        if id(value) in seen:
            raise SerializationError(f"{path}: recursive structure (contains itself)")
        seen.add(id(value))
        for key, item in value.items():
            if type(key) is not str:
                raise SerializationError(f"{path}: dict key {key!r} is a {type(key).__name__}; keys must be str")
            if not _plain(item):
                _check(item, f"{path}[{key!r}]", allow_bytes, depth + 1, seen)
        seen.discard(id(value))
        return
    if kind is bytes and allow_bytes:
        return
    hint = ""
    if kind is bytes:
        hint = " (use codec='msgpack' to send bytes, or base64-encode them)"
    elif kind.__name__ in ("datetime", "date", "time"):
        hint = " (send value.isoformat() and parse it in the task)"
    elif kind is set or kind is frozenset:
        hint = " (send a sorted list)"
    raise SerializationError(
        f"{path}: {kind.__name__} is not allowed{hint}; "
        "allowed types are None, bool, int, float, str, list, tuple and dict with str keys"
    )


class Codec:
    """Encodes envelopes and result values; decodes either format whatever it was configured with."""

    def __init__(self, name: CodecName = "json", max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 signer: Signer | None = None) -> None:
        if name not in ("json", "msgpack"):
            raise ValueError(f"unknown codec {name!r}: use 'json' or 'msgpack' (pickle is never offered)")
        self.name: CodecName = name
        self.max_message_size = max_message_size
        self.signer = signer
        self.allow_bytes = name == "msgpack"
        enc = msgspec.json.Encoder() if name == "json" else msgspec.msgpack.Encoder()
        self._encode = enc.encode
        self._json_env = msgspec.json.Decoder(Envelope).decode
        self._msgpack_env = msgspec.msgpack.Decoder(Envelope).decode
        self._json_any = msgspec.json.Decoder().decode
        self._msgpack_any = msgspec.msgpack.Decoder().decode

    def check_args(self, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any], task: str) -> None:
        """Raise SerializationError naming the argument if any argument would not encode faithfully."""
        for i, value in enumerate(args):
            if not _plain(value):
                check_encodable(value, f"{task}: args[{i}]", allow_bytes=self.allow_bytes)
        for key, value in kwargs.items():
            if not _plain(value):
                check_encodable(value, f"{task}: kwargs[{key!r}]", allow_bytes=self.allow_bytes)

    def encode(self, envelope: Envelope) -> bytes:
        """Encode one envelope; raise PayloadTooLarge before any broker sees it."""
        try:
            data = self._encode(envelope)
        except (TypeError, ValueError, OverflowError) as exc:  # check_args catches these first
            raise SerializationError(f"{envelope.name}: cannot encode message: {exc}") from exc
        if self.signer is not None:
            data = self.signer.sign(data)
        if len(data) > self.max_message_size:
            raise PayloadTooLarge(
                f"{envelope.name}: message {envelope.id} is {len(data):,} bytes, over the limit of "
                f"{self.max_message_size:,} (App(max_message_size=...)); store large data elsewhere "
                "and send a reference"
            )
        return data

    def decode(self, data: bytes) -> Envelope:
        """Decode bytes of either format into an Envelope, or raise DecodeError saying why."""
        if not data:
            raise DecodeError("empty message")
        if self.signer is not None:
            data = self.signer.verify(data)  # before anything reads the bytes
            if not data:
                raise DecodeError("empty message")
        is_json = data[0] < 0x80  # a msgpack envelope starts with a map marker (0x8X, 0xde, 0xdf)
        try:
            env = self._json_env(data) if is_json else self._msgpack_env(data)
        except (msgspec.DecodeError, RecursionError) as exc:
            version = self._version_of(data, is_json)
            if version is not None and version != VERSION:
                raise UnsupportedVersion(
                    f"envelope version {version} is not supported (this chute reads version {VERSION})"
                ) from None
            raise DecodeError(f"not a chute {'JSON' if is_json else 'msgpack'} envelope: {exc}") from None
        if env.v != VERSION:
            raise UnsupportedVersion(f"envelope version {env.v} is not supported (this chute reads version {VERSION})")
        return env

    def _version_of(self, data: bytes, is_json: bool) -> int | None:
        try:
            decoded = (msgspec.json if is_json else msgspec.msgpack).decode(data, type=_VersionOnly)
        except (msgspec.DecodeError, RecursionError):
            return None
        return int(decoded.v)

    def encode_value(self, value: Any, what: str) -> bytes:
        """Encode a task's return value for the result store."""
        check_encodable(value, what, allow_bytes=self.allow_bytes)
        return self._encode(value)

    def decode_value(self, data: bytes, codec: str) -> Any:
        """Decode a stored result value written by a codec of either name."""
        return self._json_any(data) if codec == "json" else self._msgpack_any(data)
