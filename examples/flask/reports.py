"""Flask + chute: POST /reports starts a slow report and answers at once; GET /reports/<id> follows it.

    cd examples/flask
    chute worker reports:chute                  # the worker (needs this module: it builds the Flask app)
    flask --app reports run                     # the web app, in another terminal
    curl -X POST localhost:5000/reports -H 'Content-Type: application/json' -d '{"rows": 3}'
    curl localhost:5000/reports/<id>

CHUTE_URL picks the broker (default: reports.db, a SQLite file here).
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, abort, current_app, request

from chute import State
from chute.integrations.flask import Chute

chute = Chute()


@chute.task(retries=1, retry_backoff=0.5)
def build_report(rows: int, fail: bool = False) -> dict[str, Any]:
    """The slow job. It runs on the worker inside the Flask app context (current_app works)."""
    time.sleep(float(current_app.config["REPORT_SECONDS"]))
    if fail:
        raise RuntimeError(f"report of {rows} rows failed")
    return {"rows": rows, "total": sum(range(rows)), "title": current_app.config["REPORT_TITLE"]}


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(CHUTE_URL=os.environ.get("CHUTE_URL", "sqlite:///reports.db"), REPORT_TITLE="Monthly",
                      REPORT_SECONDS=os.environ.get("REPORT_SECONDS", "1.0"))
    chute.init_app(app)

    @app.post("/reports")
    def start_report() -> tuple[dict[str, Any], int]:
        body = request.get_json(silent=True) or {}
        job = build_report.delay(int(body.get("rows", 10)), bool(body.get("fail", False)))
        return {"id": job.id, "status": "queued"}, 202

    @app.get("/reports/<report_id>")
    def report_status(report_id: str) -> dict[str, Any]:
        info = chute.result(report_id).info()
        if info is None:
            abort(404)
        out: dict[str, Any] = {"id": report_id, "status": info.state.value}
        if info.state is State.SUCCEEDED:
            out["result"] = chute.result(report_id).get(timeout=0)
        elif info.error is not None:
            out["error"] = f"{info.error.type}: {info.error.message}"
        return out

    return app


app = create_app()
