"""The dashboard as an ASGI app (Starlette): pages, the JSON API, live updates, metrics, health."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import ChuteError
from ..ops import Ops
from ..ops.history import History
from ..redact import Redactor
from . import jsonapi, pages
from .context import HERE, Dashboard, dashboard, json_response
from .metrics import render
from .middleware import SecurityMiddleware
from .openapi import document
from .security import Credentials, Guard

if TYPE_CHECKING:
    from ..app import App

STREAM_LIFETIME = 300.0  # seconds; then the stream ends and EventSource reconnects (bounds every connection)


def create_app(app: App, *, credentials: Credentials | None = None, secret: bytes | None = None,
               allowed_origins: Sequence[str] = (), redact: Sequence[str] = (), health_max_age: float = 30.0,
               refresh: float = 2.0) -> Starlette:
    """The dashboard for `app`. Without `credentials` (default: from the environment) it answers only
    loopback clients; `secret` signs sessions and CSRF tokens (default: derived from the credentials)."""
    creds = credentials if credentials is not None else Credentials.from_env()
    # many requests and the live feed share one history: read new events at most twice a second
    ops = Ops(app, redactor=Redactor.from_env(redact), history=History(app.results, min_interval=0.5))
    d = Dashboard(ops, Guard(creds, secret=secret, allowed_origins=tuple(allowed_origins)),
                  health_max_age=health_max_age, refresh=refresh)
    web = Starlette(routes=routes(), middleware=[Middleware(SecurityMiddleware, guard=d.guard)])
    web.state.dashboard = d
    return web


def routes() -> list[BaseRoute]:
    """Every route; each POST endpoint is wrapped in `protected` (CSRF and origin)."""
    api = [Route(e.path, e.handler, methods=[e.method]) for e in jsonapi.ENDPOINTS]
    return [
        Route("/", pages.overview_page),
        Route("/workers", pages.workers_page),
        Route("/tasks", pages.tasks_page),
        Route("/find", pages.find_task),
        Route("/tasks/{task_id}", pages.task_page),
        Route("/tasks/{task_id}/cancel", pages.cancel_action, methods=["POST"]),
        Route("/dlq", pages.dlq_page),
        Route("/dlq/replay", pages.replay_action, methods=["POST"]),
        Route("/dlq/purge", pages.purge_action, methods=["POST"]),
        Route("/dlq/{message_id}", pages.dead_letter_page),
        Route("/workflows", pages.workflows_page),
        Route("/workflows/{workflow_id}", pages.workflow_page),
        Route("/schedules", pages.schedules_page),
        Route("/login", pages.login_page, methods=["GET"]),
        Route("/login", pages.login_action, methods=["POST"]),
        Route("/logout", pages.logout_action, methods=["POST"]),
        *api,
        Route("/api/openapi.json", openapi),
        Route("/api/stream", stream),
        Route("/metrics", metrics_endpoint),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


def openapi(request: Request) -> Response:
    try:
        v = version("chute")
    except PackageNotFoundError:
        v = "0"
    return json_response(document(v))


def metrics_endpoint(request: Request) -> Response:
    return Response(render(dashboard(request).metrics), media_type="text/plain; version=0.0.4; charset=utf-8")


async def stream(request: Request) -> Response:
    """Server-sent events: the overview and the workers every `refresh` seconds."""
    d = dashboard(request)
    topics = set((request.query_params.get("topics") or "overview,workers").split(",")) & {"overview", "workers"}
    count = request.query_params.get("count")
    limit = int(count) if count and count.isdigit() else None  # for scripts and tests: stop after N rounds

    async def events() -> AsyncIterator[bytes]:
        yield f"retry: {int(d.refresh * 1000)}\n\n".encode()
        ends = time.monotonic() + STREAM_LIFETIME
        rounds = 0
        while time.monotonic() < ends and (limit is None or rounds < limit):
            for topic in sorted(topics):
                try:
                    value: object = await run_in_threadpool(d.snapshot, topic)
                except ChuteError as exc:
                    value = {"error": d.ops.redactor.text(str(exc))}
                    topic = "failure"
                yield b"event: " + topic.encode() + b"\ndata: " + msgspec.json.encode(value) + b"\n\n"
            rounds += 1
            if limit is None or rounds < limit:
                await asyncio.sleep(d.refresh)  # the refresh period of a live view, not a wait for work

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})
