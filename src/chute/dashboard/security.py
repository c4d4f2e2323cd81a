"""Dashboard security: who may look (authentication) and what a request may do (CSRF, origins).

Flower shipped unauthenticated and without CSRF protection (CVE-2022-30034); here:
- without credentials the dashboard answers only loopback clients that name a loopback host
  (which also defeats DNS rebinding); the CLI refuses to bind elsewhere without credentials;
- with credentials (a token, or a user and password, from the environment) every route but
  /health and /login wants a bearer/basic header or a signed session cookie;
- every POST must carry the CSRF token of the browser's own CSRF cookie and come from our own
  origin; GETs never change anything;
- cookies are HttpOnly and SameSite=Strict, Secure when served over HTTPS.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ConfigurationError

SESSION_COOKIE = "chute_session"
CSRF_COOKIE = "chute_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class Credentials:
    """What a client must present: a token, a user and password, or both (either works)."""

    token: str | None = None
    user: str | None = None
    password: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.token or self.user)

    def __repr__(self) -> str:  # never show a secret
        return f"Credentials(token={'***' if self.token else None}, user={self.user!r}, password=***)"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        """From CHUTE_DASHBOARD_TOKEN and/or CHUTE_DASHBOARD_USER + CHUTE_DASHBOARD_PASSWORD."""
        env = environ if environ is not None else os.environ
        token = env.get("CHUTE_DASHBOARD_TOKEN") or None
        user = env.get("CHUTE_DASHBOARD_USER") or None
        password = env.get("CHUTE_DASHBOARD_PASSWORD") or None
        if (user is None) != (password is None):
            raise ConfigurationError("set both CHUTE_DASHBOARD_USER and CHUTE_DASHBOARD_PASSWORD, or neither")
        if token is not None and len(token) < 16:
            raise ConfigurationError("CHUTE_DASHBOARD_TOKEN must be at least 16 characters; "
                                     "make one with: python -c 'import secrets; print(secrets.token_urlsafe())'")
        return cls(token, user, password)


def is_loopback(host: str) -> bool:
    """True for a host name or address that only this machine can reach."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_HOSTS:
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(authority: str) -> str:
    """`host` of a Host header value `host[:port]` (IPv6 in brackets)."""
    if authority.startswith("["):
        return authority[1:].split("]", 1)[0]
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


class Guard:
    """Checks credentials, sessions, CSRF tokens and origins for one dashboard."""

    def __init__(self, credentials: Credentials, *, secret: bytes | None = None, session_ttl: float = 12 * 3600,
                 allowed_origins: tuple[str, ...] = ()) -> None:
        self.credentials = credentials
        self.session_ttl = session_ttl
        self.allowed_origins = tuple(o.rstrip("/").lower() for o in allowed_origins)
        if secret is None:  # derived from the credentials: sessions survive restarts, die when they change
            material = f"{credentials.token}|{credentials.user}|{credentials.password}".encode()
            secret = hashlib.sha256(b"chute-dashboard|" + material).digest() if credentials.enabled \
                else secrets.token_bytes(32)
        self._key = secret

    def _sign(self, *parts: str) -> str:
        return hmac.new(self._key, "|".join(parts).encode(), hashlib.sha256).hexdigest()

    # -- who --------------------------------------------------------------------------------
    def check(self, token: str | None = None, user: str | None = None, password: str | None = None) -> bool:
        """True if these credentials are the configured ones (compared in constant time)."""
        c = self.credentials
        ok = False
        if c.token and token:
            ok |= hmac.compare_digest(token.encode(), c.token.encode())
        if c.user and c.password and user is not None and password is not None:
            ok |= hmac.compare_digest(user.encode(), c.user.encode()) & \
                hmac.compare_digest(password.encode(), c.password.encode())
        return ok

    def authorization(self, header: str) -> bool:
        """Check an `Authorization: Bearer …` or `Basic …` header."""
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return self.check(token=value.strip())
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return self.check(user=user, password=password)
        return False

    def new_session(self) -> str:
        expires, nonce = str(int(time.time() + self.session_ttl)), secrets.token_urlsafe(16)
        return f"{expires}.{nonce}.{self._sign('session', expires, nonce)}"

    def session(self, value: str | None) -> bool:
        if not value or value.count(".") != 2:
            return False
        expires, nonce, sig = value.split(".")
        if not hmac.compare_digest(sig, self._sign("session", expires, nonce)):
            return False
        return expires.isdigit() and int(expires) > time.time()

    # -- what -------------------------------------------------------------------------------
    def csrf_token(self, csrf_cookie: str) -> str:
        return self._sign("csrf", csrf_cookie)

    def csrf_ok(self, csrf_cookie: str | None, token: str | None) -> bool:
        """The token must be the one made for this browser's own CSRF cookie."""
        if not csrf_cookie or not token:
            return False
        return hmac.compare_digest(token, self.csrf_token(csrf_cookie))

    def origin_ok(self, headers: Mapping[str, str], scheme: str) -> bool:
        """A browser's request must come from our own origin (Origin, else Referer, else Sec-Fetch-Site)."""
        own = f"{scheme}://{headers.get('host', '')}".lower()
        allowed = (own, *self.allowed_origins)
        origin = headers.get("origin")
        if origin is not None:
            return origin.rstrip("/").lower() in allowed
        referer = headers.get("referer")
        if referer:
            parts = urlsplit(referer)
            return f"{parts.scheme}://{parts.netloc}".lower() in allowed
        return headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
