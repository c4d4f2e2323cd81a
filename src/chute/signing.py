"""Optional HMAC-SHA256 signing of messages, with key rotation.

A signed message is the envelope's bytes followed by one trailer line:
`\\n#chute-hmac-sha256:<key id>:<hex digest of the envelope bytes>`. Producers sign with the
first key; workers accept a signature by any configured key, so keys rotate by adding the new one
first, waiting for old messages to drain, then removing the old one. Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from .errors import ConfigurationError, DecodeError

MARK = b"\n#chute-hmac-sha256:"


class BadSignature(DecodeError):
    """A message is unsigned, signed with an unknown key, or altered since it was signed."""


class Signer:
    """Signs with the first key of `keys` ({key id: secret}); verifies with any of them."""

    def __init__(self, keys: Mapping[str, str | bytes]) -> None:
        if not keys:
            raise ConfigurationError("signing_keys needs at least one key: {'key-id': 'secret'}")
        self._keys: dict[bytes, bytes] = {}
        for kid, secret in keys.items():
            if not kid or ":" in kid or not kid.isascii():
                raise ConfigurationError(f"signing key id {kid!r} must be plain ASCII without ':'")
            raw = secret.encode() if isinstance(secret, str) else bytes(secret)
            if len(raw) < 16:
                raise ConfigurationError(f"signing key {kid!r} is too short: use at least 16 bytes of secret")
            self._keys[kid.encode()] = raw
        self._current = next(iter(self._keys))

    def sign(self, body: bytes) -> bytes:
        digest = hmac.new(self._keys[self._current], body, hashlib.sha256).hexdigest().encode()
        return body + MARK + self._current + b":" + digest

    def verify(self, data: bytes) -> bytes:
        """The signed bytes without their trailer, or BadSignature saying why."""
        at = data.rfind(MARK)
        if at < 0:
            raise BadSignature("bad_signature: the message is not signed and this App requires signatures")
        body, trailer = data[:at], data[at + len(MARK):]
        kid, _, digest = trailer.partition(b":")
        key = self._keys.get(kid)
        if key is None:
            raise BadSignature(f"bad_signature: signed with key {kid.decode(errors='replace')!r}, "
                               "which this App does not have")
        expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(expected, digest):
            raise BadSignature("bad_signature: the message was altered after it was signed")
        return body
