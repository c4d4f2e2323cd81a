"""Any WSGI app + chute: POST /reports starts a slow report and answers at once; GET /reports/<id> follows it.

No framework here, only the middleware that puts the App in the environ:

    cd examples/wsgi
    chute worker reports:chute                  # the worker
    gunicorn -b 127.0.0.1:8000 reports:application

CHUTE_URL picks the broker (default: reports.db here).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import chute as chute_lib
from chute.integrations.wsgi import ChuteMiddleware, get_app

chute = chute_lib.App(os.environ.get("CHUTE_URL", "sqlite:///reports.db"))


@chute.task(retries=1, retry_backoff=0.5)
def build_report(rows: int, fail: bool = False) -> dict[str, Any]:
    time.sleep(float(os.environ.get("REPORT_SECONDS", "1.0")))
    if fail:
        raise RuntimeError(f"report of {rows} rows failed")
    return {"rows": rows, "total": sum(range(rows))}


def reports(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    app = get_app(environ)
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
    if method == "POST" and path == "/reports":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(size) or b"{}")
        job = build_report.delay(int(body.get("rows", 10)), bool(body.get("fail", False)))
        return respond(start_response, "202 Accepted", {"id": job.id, "status": "queued"})
    if method == "GET" and path.startswith("/reports/"):
        job = app.result(path.removeprefix("/reports/"))
        info = job.info()
        if info is None:
            return respond(start_response, "404 Not Found", {"error": "no such report"})
        out: dict[str, Any] = {"id": job.id, "status": info.state.value}
        if info.state is chute_lib.State.SUCCEEDED:
            out["result"] = job.get(timeout=0)
        elif info.error is not None:
            out["error"] = f"{info.error.type}: {info.error.message}"
        return respond(start_response, "200 OK", out)
    return respond(start_response, "404 Not Found", {"error": "not found"})


def respond(start_response: Callable[..., Any], status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


application = ChuteMiddleware(reports, chute)
