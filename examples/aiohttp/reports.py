"""aiohttp + chute: POST /reports starts a slow report and answers at once; GET /reports/{id} follows it.

    cd examples/aiohttp
    chute worker reports:chute                  # the worker
    python reports.py --port 8080               # the web app (web.run_app), in another terminal

CHUTE_URL picks the broker (default: reports.db here).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from typing import Any

from aiohttp import web

import chute as chute_lib
from chute.integrations.aiohttp import get_chute, setup

chute = chute_lib.App(os.environ.get("CHUTE_URL", "sqlite:///reports.db"))


@chute.task(retries=1, retry_backoff=0.5)
async def build_report(rows: int, fail: bool = False) -> dict[str, Any]:
    await asyncio.sleep(float(os.environ.get("REPORT_SECONDS", "1.0")))
    if fail:
        raise RuntimeError(f"report of {rows} rows failed")
    return {"rows": rows, "total": sum(range(rows))}


async def start_report(request: web.Request) -> web.Response:
    body = await request.json() if request.can_read_body else {}
    job = await build_report.delay_async(int(body.get("rows", 10)), bool(body.get("fail", False)))
    return web.json_response({"id": job.id, "status": "queued"}, status=202)


async def report_status(request: web.Request) -> web.Response:
    """?wait=SECONDS long-polls: the handler awaits the result without blocking the event loop."""
    job = get_chute(request).result(request.match_info["report_id"])
    wait = float(request.query.get("wait", "0"))
    if wait > 0:
        with contextlib.suppress(Exception):  # a timeout or the task's error: reported below
            await job.wait(timeout=min(wait, 30.0))
    info = await job.info_async()
    if info is None:
        raise web.HTTPNotFound(text="no such report")
    out: dict[str, Any] = {"id": job.id, "status": info.state.value}
    if info.state is chute_lib.State.SUCCEEDED:
        out["result"] = await job.wait(timeout=0)
    elif info.error is not None:
        out["error"] = f"{info.error.type}: {info.error.message}"
    return web.json_response(out)


def make_app() -> web.Application:
    app = web.Application()
    setup(app, chute)
    app.router.add_post("/reports", start_report)
    app.router.add_get("/reports/{report_id}", report_status)
    return app


async def create_app() -> web.Application:
    """For gunicorn: `gunicorn reports:create_app --worker-class aiohttp.GunicornWebWorker`."""
    return make_app()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8080)
    web.run_app(make_app(), host="127.0.0.1", port=parser.parse_args().port)
