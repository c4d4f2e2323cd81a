"""The dashboard's pages (server-rendered, escaped by Jinja2) and their form actions (POST + CSRF)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..errors import ChuteError, ConfigurationError
from ..ops import STATES
from .context import dashboard
from .graph import bars, failure_points, layout
from .middleware import cookie, protected
from .security import SESSION_COOKIE

Build = Callable[[Request], "dict[str, Any] | None"]


def _page(template: str, nav: str, build: Build) -> Callable[[Request], Response]:
    """A sync page handler (run on a thread): render `template` with what `build` returns; 404 on None."""

    def handler(request: Request) -> Response:
        d = dashboard(request)
        try:
            context = build(request)
        except ConfigurationError as exc:
            return d.render(request, "error.html", status_code=400, nav=nav, message=str(exc))
        except ChuteError as exc:
            return d.render(request, "error.html", status_code=503, nav=nav, message=d.ops.redactor.text(str(exc)))
        if context is None:
            return d.render(request, "error.html", status_code=404, nav=nav, message="Not found.")
        return d.render(request, template, nav=nav, done=request.query_params.get("done", ""), **context)

    handler.__name__ = template.removesuffix(".html") + "_page"
    return handler


def _overview(request: Request) -> dict[str, object]:
    o = dashboard(request).ops.overview()
    chart, top = bars(o.rates)
    return {"o": o, "bars": chart, "top": top, "failure_points": failure_points(o.rates)}


def _workers(request: Request) -> dict[str, object]:
    return {"workers": dashboard(request).ops.workers()}


def _tasks(request: Request) -> dict[str, object]:
    q = request.query_params
    state, name = q.get("state") or None, q.get("task") or None
    return {"tasks": dashboard(request).ops.tasks(state, name, 200), "state": state or "", "task": name or "",
            "states": STATES}


def _task(request: Request) -> dict[str, object] | None:
    t = dashboard(request).ops.task(request.path_params["task_id"])
    return None if t is None else {"t": t}


def _dlq(request: Request) -> dict[str, object]:
    q = request.query_params
    queue, task, search = q.get("queue") or None, q.get("task") or None, q.get("q") or None
    ops = dashboard(request).ops
    return {"dead": ops.dead_letters(queue, task, search, 200), "queue": queue or "", "task": task or "",
            "q": search or "", "queues": [s.queue for s in ops.queues() if s.dead]}


def _dead_letter(request: Request) -> dict[str, object] | None:
    d = dashboard(request).ops.dead_letter(request.path_params["message_id"])
    return None if d is None else {"d": d}


def _workflows(request: Request) -> dict[str, object]:
    return {"workflows": dashboard(request).ops.workflows(100)}


def _workflow(request: Request) -> dict[str, object] | None:
    w = dashboard(request).ops.workflow(request.path_params["workflow_id"])
    return None if w is None else {"w": w, "g": layout(w)}


def _schedules(request: Request) -> dict[str, object]:
    return {"s": dashboard(request).ops.schedules()}


overview_page = _page("overview.html", "overview", _overview)
workers_page = _page("workers.html", "workers", _workers)
tasks_page = _page("tasks.html", "tasks", _tasks)
task_page = _page("task.html", "tasks", _task)
dlq_page = _page("dlq.html", "dlq", _dlq)
dead_letter_page = _page("dead_letter.html", "dlq", _dead_letter)
workflows_page = _page("workflows.html", "workflows", _workflows)
workflow_page = _page("workflow.html", "workflows", _workflow)
schedules_page = _page("schedules.html", "schedules", _schedules)


def find_task(request: Request) -> Response:
    """The search box: go to the task (or workflow) with this id."""
    found = (request.query_params.get("id") or "").strip()
    kind = "workflows" if request.query_params.get("kind") == "workflow" else "tasks"
    return RedirectResponse(f"/{kind}/{quote(found, safe='')}" if found else f"/{kind}", status_code=303)


# -- actions ------------------------------------------------------------------------------------
def _back(form: FormData, default: str, done: str) -> RedirectResponse:
    target = form.get("next")
    path = _next(target if isinstance(target, str) else None, default)
    sep = "&" if "?" in path else "?"
    return RedirectResponse(f"{path}{sep}{urlencode({'done': done})}", status_code=303)


def _selection(form: FormData) -> tuple[list[str], str | None, bool]:
    ids = [i for i in form.getlist("ids") if isinstance(i, str) and i]
    queue = form.get("queue")
    return ids, queue if isinstance(queue, str) and queue else None, form.get("all") == "1"


@protected
async def replay_action(request: Request) -> Response:
    form = await request.form()
    ids, queue, everything = _selection(form)
    try:
        n = (await run_in_threadpool(dashboard(request).ops.replay, ids, queue, everything)).count
    except ConfigurationError:
        return _back(form, "/dlq", "Select messages to replay first.")
    return _back(form, "/dlq", f"Replayed {n} message(s).")


@protected
async def purge_action(request: Request) -> Response:
    form = await request.form()
    ids, queue, everything = _selection(form)
    try:
        n = (await run_in_threadpool(dashboard(request).ops.purge, ids, queue, everything)).count
    except ConfigurationError:
        return _back(form, "/dlq", "Select messages to purge first.")
    return _back(form, "/dlq", f"Purged {n} message(s).")


@protected
async def cancel_action(request: Request) -> Response:
    form = await request.form()
    task_id = request.path_params["task_id"]
    n = (await run_in_threadpool(dashboard(request).ops.cancel, task_id)).count
    return _back(form, f"/tasks/{quote(task_id, safe='')}", "Cancelled." if n else "It had already finished.")


# -- login --------------------------------------------------------------------------------------
def login_page(request: Request) -> Response:
    d = dashboard(request)
    if not d.guard.credentials.enabled:
        return RedirectResponse("/", status_code=303)
    return d.render(request, "login.html", nav="", next=_next(request.query_params.get("next")), failed=False)


@protected
async def login_action(request: Request) -> Response:
    d = dashboard(request)
    form = await request.form()
    values = {k: v if isinstance(v, str) else None for k, v in form.items()}
    target = _next(values.get("next"))
    if not d.guard.check(values.get("token"), values.get("user"), values.get("password")):
        return d.render(request, "login.html", status_code=401, nav="", next=target, failed=True)
    response = RedirectResponse(target, status_code=303)
    response.headers.append("set-cookie", cookie(SESSION_COOKIE, d.guard.new_session(),
                                                 secure=request.url.scheme == "https",
                                                 max_age=int(d.guard.session_ttl)))
    return response


@protected
async def logout_action(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.headers.append("set-cookie", cookie(SESSION_COOKIE, "", secure=request.url.scheme == "https",
                                                 max_age=0))
    return response


def _next(value: str | None, default: str = "/") -> str:
    """A local path to go back to; anything else (`//host`, `/\\host`, `https://…`) is refused."""
    return value if value and value.startswith("/") and not value.startswith(("//", "/\\")) else default
