"""Pyramid + chute: POST /reports starts a slow report and answers at once; GET /reports/{id} follows it.

    cd examples/pyramid
    chute worker worker:chute                            # the worker (loads development.ini)
    gunicorn --paste development.ini -b 127.0.0.1:6543   # the web app (or pserve with waitress)
"""

from __future__ import annotations

import os
import time
from typing import Any

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPNotFound
from pyramid.request import Request
from pyramid.view import view_config

from chute import State
from chute.integrations.config import DeferredApp

chute = DeferredApp(hint="config.include('chute.integrations.pyramid')")  # chute.url etc. come from the .ini


@chute.task(retries=1, retry_backoff=0.5)
def build_report(rows: int, fail: bool = False) -> dict[str, Any]:
    time.sleep(float(os.environ.get("REPORT_SECONDS", "1.0")))
    if fail:
        raise RuntimeError(f"report of {rows} rows failed")
    return {"rows": rows, "total": sum(range(rows))}


@view_config(route_name="reports", request_method="POST", renderer="json")
def start_report(request: Request) -> dict[str, Any]:
    body = request.json_body if request.body else {}
    job = build_report.delay(int(body.get("rows", 10)), bool(body.get("fail", False)))
    request.response.status_code = 202
    return {"id": job.id, "status": "queued"}


@view_config(route_name="report", request_method="GET", renderer="json")
def report_status(request: Request) -> dict[str, Any]:
    job = request.chute.result(request.matchdict["report_id"])
    info = job.info()
    if info is None:
        raise HTTPNotFound()
    out: dict[str, Any] = {"id": job.id, "status": info.state.value}
    if info.state is State.SUCCEEDED:
        out["result"] = job.get(timeout=0)
    elif info.error is not None:
        out["error"] = f"{info.error.type}: {info.error.message}"
    return out


def main(global_config: dict[str, str], **settings: str) -> Any:
    with Configurator(settings=settings) as config:
        config.include("chute.integrations.pyramid")
        config.add_route("reports", "/reports")
        config.add_route("report", "/reports/{report_id}")
        config.scan(__name__)
        return config.make_wsgi_app()
