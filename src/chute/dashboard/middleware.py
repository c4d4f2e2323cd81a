"""The dashboard's outermost layer: authenticate every request, hand out the CSRF cookie, set
security headers (plain ASGI, so streaming responses pass through untouched); and `protected`,
the CSRF and origin check every POST endpoint is wrapped in."""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request, cookie_parser
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .security import CSRF_COOKIE, CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, Guard, host_of, is_loopback

MAX_BODY = 1 << 20  # bytes a POST may carry: forms and small JSON bodies only
PUBLIC = frozenset({"/health", "/login"})  # answered without credentials (login shows only the form)


def cookie(name: str, value: str, *, secure: bool, max_age: int | None = None) -> str:
    """A Set-Cookie value: HttpOnly, SameSite=Strict, Path=/, Secure under HTTPS."""
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def content_security_policy(nonce: str) -> str:
    return ("default-src 'none'; script-src 'self'; style-src 'self' 'nonce-" + nonce + "'; img-src 'self' data:; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        cookies = cookie_parser(headers.get("cookie", ""))
        path: str = scope["path"]
        state = scope.setdefault("state", {})
        if self.guard.credentials.enabled:
            authenticated = (self.guard.authorization(headers.get("authorization", ""))
                             or self.guard.session(cookies.get(SESSION_COOKIE)))
        else:  # no credentials: loopback only, and only under a loopback name (defeats DNS rebinding)
            client = scope.get("client")
            if not is_loopback(host_of(headers.get("host", ""))) or (client and not is_loopback(client[0])):
                await _plain(send, 403, "This dashboard has no authentication, so it answers only on localhost. "
                                        "Set CHUTE_DASHBOARD_TOKEN to serve it elsewhere.\n")
                return
            authenticated = True
        state["authenticated"] = authenticated
        if not authenticated and path not in PUBLIC:
            if path.startswith("/api/") or path == "/metrics" or scope["method"] not in ("GET", "HEAD"):
                await _unauthorized(send, self.guard)
            else:
                target = path + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else "")
                await _redirect(send, "/login?next=" + quote(target, safe=""))
            return
        csrf = cookies.get(CSRF_COOKIE)
        fresh = None if csrf else secrets.token_urlsafe(32)
        state["csrf_cookie"] = csrf or fresh
        state["csp_nonce"] = nonce = secrets.token_urlsafe(16)
        secure = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                h = MutableHeaders(scope=message)
                h.setdefault("content-security-policy", content_security_policy(nonce))
                h["x-content-type-options"] = "nosniff"
                h["x-frame-options"] = "DENY"
                h["referrer-policy"] = "same-origin"
                h["cross-origin-opener-policy"] = "same-origin"
                h["cross-origin-resource-policy"] = "same-origin"
                h.setdefault("cache-control", "no-store")
                if fresh:
                    h.append("set-cookie", cookie(CSRF_COOKIE, fresh, secure=secure))
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _plain(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store"), *(extra or [])]})
    await send({"type": "http.response.body", "body": text.encode()})


async def _unauthorized(send: Send, guard: Guard) -> None:
    challenge = b'Basic realm="chute", charset="UTF-8"' if guard.credentials.user else b'Bearer realm="chute"'
    body = json.dumps({"error": "authentication required"}).encode()
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", b"application/json"), (b"www-authenticate", challenge), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str) -> None:
    await send({"type": "http.response.start", "status": 303, "headers": [
        (b"location", location.encode("latin-1")), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": b""})


Endpoint = Callable[[Request], Awaitable[Response]]


def protected(endpoint: Endpoint) -> Endpoint:
    """Wrap a state-changing (POST) endpoint: 403 unless it comes from our own origin with the CSRF
    token of the browser's own CSRF cookie (form field `csrf_token` or header X-CSRF-Token)."""

    @functools.wraps(endpoint)
    async def check(request: Request) -> Response:
        guard: Guard = request.app.state.dashboard.guard
        size = request.headers.get("content-length", "0")
        if not size.isdigit() or int(size) > MAX_BODY:
            return PlainTextResponse("request body too large\n", status_code=413)
        if not guard.origin_ok(request.headers, request.url.scheme):
            return PlainTextResponse("cross-origin request refused\n", status_code=403)
        token = request.headers.get(CSRF_HEADER)
        if token is None and request.headers.get("content-type", "").startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")):
            value = (await request.form()).get(CSRF_FIELD)
            token = value if isinstance(value, str) else None
        if not guard.csrf_ok(request.cookies.get(CSRF_COOKIE), token):
            return PlainTextResponse("missing or wrong CSRF token; reload the page and try again\n", status_code=403)
        return await endpoint(request)

    check.protected = True  # type: ignore[attr-defined]  # the route crawl test looks for it
    return check
