"""Bottle + chute: POST /reports starts a slow report and answers at once; GET /reports/<id> follows it.

    cd examples/bottle
    chute worker reports:chute                  # the worker
    python serve.py --port 8080                 # the web app on bottle's gevent server

The plugin reads `chute.*` from app.config (here CHUTE_URL, default reports.db, a SQLite file).
"""

from __future__ import annotations

import os
import time
from typing import Any

import bottle

from chute import App, State
from chute.integrations.bottle import ChutePlugin
from chute.integrations.config import DeferredApp

chute = DeferredApp()


@chute.task(retries=1, retry_backoff=0.5)
def build_report(rows: int, fail: bool = False) -> dict[str, Any]:
    time.sleep(float(os.environ.get("REPORT_SECONDS", "1.0")))
    if fail:
        raise RuntimeError(f"report of {rows} rows failed")
    return {"rows": rows, "total": sum(range(rows))}


app = bottle.Bottle()
app.config["chute.url"] = os.environ.get("CHUTE_URL", "sqlite:///reports.db")  # or app.config.load_config(ini)
app.install(ChutePlugin(chute))


@app.post("/reports")
def start_report() -> dict[str, Any]:
    body = bottle.request.json or {}
    job = build_report.delay(int(body.get("rows", 10)), bool(body.get("fail", False)))
    bottle.response.status = 202
    return {"id": job.id, "status": "queued"}


@app.get("/reports/<report_id>")
def report_status(report_id: str, chute: App) -> dict[str, Any]:  # `chute` comes from the plugin
    job = chute.result(report_id)
    info = job.info()
    if info is None:
        bottle.abort(404, "no such report")
    out: dict[str, Any] = {"id": report_id, "status": info.state.value}
    if info.state is State.SUCCEEDED:
        out["result"] = job.get(timeout=0)
    elif info.error is not None:
        out["error"] = f"{info.error.type}: {info.error.message}"
    return out
