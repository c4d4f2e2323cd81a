"""The state one dashboard shares between its routes: the operations API, the guard, templates."""

from __future__ import annotations

import datetime
import json
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..brokers import redact_url
from ..ops import Ops
from .metrics import registry
from .security import CSRF_COOKIE, Guard

HERE = Path(__file__).parent


class Dashboard:
    """One dashboard: what every route needs, reachable as `request.app.state.dashboard`."""

    def __init__(self, ops: Ops, guard: Guard, *, health_max_age: float, refresh: float) -> None:
        self.ops = ops
        self.guard = guard
        self.health_max_age = health_max_age
        self.refresh = refresh
        self.broker = redact_url(ops.app.url)
        self.metrics = registry(ops)
        self._cache: dict[str, tuple[float, object]] = {}
        self._cache_lock = threading.Lock()
        self.css = (HERE / "static" / "dashboard.css").read_text()
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=select_autoescape(default=True, default_for_string=True))
        self.templates.filters.update(ago=ago, until=until, when=when, pretty=pretty, compact=compact, pct=pct,
                                     duration=duration)

    def snapshot(self, topic: str) -> object:
        """The overview or the workers for live streams, computed at most once per half refresh period
        however many browsers are connected."""
        with self._cache_lock:
            at, value = self._cache.get(topic, (0.0, None))
            if value is None or time.monotonic() - at >= self.refresh / 2:
                value = self.ops.overview() if topic == "overview" else self.ops.workers()
                self._cache[topic] = (time.monotonic(), value)
            return value

    def csrf_token(self, request: Request) -> str:
        cookie = request.state.csrf_cookie if hasattr(request.state, "csrf_cookie") else \
            request.cookies.get(CSRF_COOKIE, "")
        return self.guard.csrf_token(cookie)

    def render(self, request: Request, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(
            request=request, csrf_token=self.csrf_token(request), nonce=getattr(request.state, "csp_nonce", ""),
            css=self.css, broker=self.broker, auth=self.guard.credentials.enabled, app_name=self.ops.app.name,
            path=request.url.path, **context)
        return HTMLResponse(html, status_code=status_code)


def dashboard(request: Request) -> Dashboard:
    d: Dashboard = request.app.state.dashboard
    return d


def json_response(value: Any, status_code: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status_code=status_code, media_type="application/json")


def error(status_code: int, message: str) -> Response:
    return json_response({"error": message}, status_code)


# -- template filters ---------------------------------------------------------------------------
def ago(ts: float | None) -> str:
    if not ts:
        return "—"
    s = max(0.0, time.time() - ts)
    if s < 60:
        return f"{s:.0f} s ago"
    if s < 3600:
        return f"{s / 60:.0f} min ago"
    if s < 86400:
        return f"{s / 3600:.1f} h ago"
    return f"{s / 86400:.0f} d ago"


def until(ts: float | None) -> str:
    if not ts:
        return "—"
    s = ts - time.time()
    if s <= 0:
        return "due now"
    return f"in {s:.0f} s" if s < 60 else f"in {s / 60:.0f} min" if s < 3600 else f"in {s / 3600:.1f} h"


def when(ts: float | None) -> str:
    if not ts:
        return "—"
    return datetime.datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def pretty(value: Any) -> str:
    """JSON for display (the template escapes it)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=repr)


def compact(value: Any) -> str:
    """One-line JSON for display (the template escapes it)."""
    return json.dumps(value, ensure_ascii=False, default=repr)


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
