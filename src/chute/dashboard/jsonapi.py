"""The JSON API behind the pages: one table of endpoints that gives both the routes and the
OpenAPI document (so they cannot drift apart). Every handler calls chute.ops and nothing else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..errors import ChuteError, ConfigurationError
from ..ops import STATES
from ..ops.views import (
    ActionResult,
    DeadLetterView,
    Health,
    Overview,
    Schedules,
    TaskSummary,
    TaskView,
    WorkerView,
    WorkflowSummary,
    WorkflowView,
)
from .context import dashboard, error, json_response
from .middleware import protected


class DeadLetterAction(msgspec.Struct, forbid_unknown_fields=True):
    """Which dead letters to replay or purge: these ids, or all of a queue, or (all=true) every one."""

    ids: list[str] = msgspec.field(default_factory=list)
    queue: str | None = None
    all: bool = False


class CsrfToken(msgspec.Struct):
    token: str  # send it back as the X-CSRF-Token header, with the chute_csrf cookie this response set


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # path or query
    description: str
    schema: dict[str, Any]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    summary: str
    handler: Callable[[Request], Awaitable[Response]] | Callable[[Request], Response]
    response: Any = None  # a type msgspec can describe; None for non-JSON answers
    params: tuple[Param, ...] = ()
    body: Any = None
    media_type: str = "application/json"


def _int(request: Request, name: str, default: int, top: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 0 <= int(raw) <= top:
        raise ConfigurationError(f"{name} must be a whole number from 0 to {top}")
    return int(raw)


def _answer(fn: Callable[[Request], Any]) -> Callable[[Request], Response]:
    """A sync GET handler (Starlette runs it on a thread): its value as JSON; 400/404/503 on errors."""

    def handler(request: Request) -> Response:
        try:
            value = fn(request)
        except ConfigurationError as exc:
            return error(400, str(exc))
        except ChuteError as exc:
            return error(503, f"broker error: {dashboard(request).ops.redactor.text(str(exc))}")
        return error(404, "not found") if value is None else json_response(value)

    handler.__name__ = fn.__name__
    return handler


def _q(request: Request, name: str) -> str | None:
    return request.query_params.get(name) or None


@_answer
def overview(request: Request) -> Overview:
    return dashboard(request).ops.overview()


@_answer
def workers(request: Request) -> list[WorkerView]:
    return dashboard(request).ops.workers()


@_answer
def tasks(request: Request) -> list[TaskSummary]:
    return dashboard(request).ops.tasks(_q(request, "state"), _q(request, "task"), _int(request, "limit", 100, 1000))


@_answer
def task(request: Request) -> TaskView | None:
    return dashboard(request).ops.task(request.path_params["task_id"])


@_answer
def dead_letters(request: Request) -> list[DeadLetterView]:
    return dashboard(request).ops.dead_letters(_q(request, "queue"), _q(request, "task"), _q(request, "q"),
                                               _int(request, "limit", 50, 1000), _int(request, "offset", 0, 10**9))


@_answer
def dead_letter(request: Request) -> DeadLetterView | None:
    return dashboard(request).ops.dead_letter(request.path_params["message_id"])


@_answer
def workflows(request: Request) -> list[WorkflowSummary]:
    return dashboard(request).ops.workflows(_int(request, "limit", 50, 500))


@_answer
def workflow(request: Request) -> WorkflowView | None:
    return dashboard(request).ops.workflow(request.path_params["workflow_id"])


@_answer
def schedules(request: Request) -> Schedules:
    return dashboard(request).ops.schedules()


def csrf(request: Request) -> Response:
    return json_response(CsrfToken(dashboard(request).csrf_token(request)))


def health(request: Request) -> Response:
    d = dashboard(request)
    h = d.ops.health(d.health_max_age)
    return json_response(h, 200 if h.healthy else 503)


async def _action(request: Request, run: Callable[[DeadLetterAction], ActionResult]) -> Response:
    try:
        body = msgspec.json.decode(await request.body(), type=DeadLetterAction)
    except msgspec.DecodeError as exc:
        return error(400, f"body: {exc}")
    try:
        return json_response(await run_in_threadpool(run, body))
    except ConfigurationError as exc:
        return error(400, str(exc))


@protected
async def replay(request: Request) -> Response:
    ops = dashboard(request).ops
    return await _action(request, lambda b: ops.replay(b.ids, b.queue, b.all))


@protected
async def purge(request: Request) -> Response:
    ops = dashboard(request).ops
    return await _action(request, lambda b: ops.purge(b.ids, b.queue, b.all))


@protected
async def cancel(request: Request) -> Response:
    ops = dashboard(request).ops
    return json_response(await run_in_threadpool(ops.cancel, request.path_params["task_id"]))


def _param(name: str, where: str, description: str, **schema: Any) -> Param:
    return Param(name, where, description, schema or {"type": "string"})


LIMIT = _param("limit", "query", "At most this many.", type="integer", minimum=0)
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/api/overview", "Queues, workers and the last hour's outcomes per minute", overview, Overview),
    Endpoint("GET", "/api/workers", "Live workers, then those gone offline in the last hour", workers,
             list[WorkerView]),
    Endpoint("GET", "/api/tasks", "Recent tasks, newest first, by state and task name", tasks, list[TaskSummary], (
        _param("state", "query", "Only tasks now in this state.", enum=list(STATES)),
        _param("task", "query", "Only this task name."), LIMIT)),
    Endpoint("GET", "/api/tasks/{task_id}", "One task: state, arguments, result or error, attempts", task, TaskView,
             (_param("task_id", "path", "The task id."),)),
    Endpoint("POST", "/api/tasks/{task_id}/cancel", "Cancel a task (count 0 if it had already finished)", cancel,
             ActionResult, (_param("task_id", "path", "The task id."),)),
    Endpoint("GET", "/api/dlq", "Dead letters, oldest first", dead_letters, list[DeadLetterView], (
        _param("queue", "query", "Only this queue."), _param("task", "query", "Only this task name."),
        _param("q", "query", "Only those whose id or reason contains this text."), LIMIT,
        _param("offset", "query", "Skip this many.", type="integer", minimum=0))),
    Endpoint("GET", "/api/dlq/{message_id}", "One dead letter with its task's last error", dead_letter,
             DeadLetterView, (_param("message_id", "path", "The message (task) id."),)),
    Endpoint("POST", "/api/dlq/replay", "Send dead letters back to their queues", replay, ActionResult,
             body=DeadLetterAction),
    Endpoint("POST", "/api/dlq/purge", "Delete dead letters for good", purge, ActionResult, body=DeadLetterAction),
    Endpoint("GET", "/api/workflows", "Workflows with a step that ran in the last hour", workflows,
             list[WorkflowSummary], (LIMIT,)),
    Endpoint("GET", "/api/workflows/{workflow_id}", "One workflow's steps, their dependencies and states", workflow,
             WorkflowView, (_param("workflow_id", "path", "The workflow id."),)),
    Endpoint("GET", "/api/schedules", "Periodic tasks (next and last run) and the active scheduler", schedules,
             Schedules),
    Endpoint("GET", "/api/csrf", "A CSRF token for API clients that POST", csrf, CsrfToken),
    Endpoint("GET", "/health", "200 when the broker answers and a worker sent a heartbeat in time, else 503 "
             "(no credentials needed)", health, Health),
)
