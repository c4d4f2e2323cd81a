"""FastAPI + chute: POST /reports starts a slow report and answers at once; GET /reports/{id} follows it.

    cd examples/fastapi
    chute worker reports:chute                  # the worker
    uvicorn reports:app                         # the web app, in another terminal
    curl -X POST localhost:8000/reports -H 'Content-Type: application/json' -d '{"rows": 3}'

Handlers await the async client: enqueueing never blocks the event loop (Redis natively through
redis.asyncio, SQLite on a thread). CHUTE_URL picks the broker (default: reports.db here).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel

import chute as chute_lib
from chute.integrations.asgi import get_chute, lifespan

chute = chute_lib.App(os.environ.get("CHUTE_URL", "sqlite:///reports.db"))
Chute = Annotated[chute_lib.App, Depends(get_chute)]


@chute.task(retries=1, retry_backoff=0.5)
async def build_report(rows: int, fail: bool = False) -> dict[str, Any]:
    """The slow job: an `async def` task runs on the worker's event loop."""
    await asyncio.sleep(float(os.environ.get("REPORT_SECONDS", "1.0")))
    if fail:
        raise RuntimeError(f"report of {rows} rows failed")
    return {"rows": rows, "total": sum(range(rows))}


class ReportRequest(BaseModel):
    rows: int = 10
    fail: bool = False


app = FastAPI(lifespan=lifespan(chute))


@app.post("/reports", status_code=202)
async def start_report(req: ReportRequest) -> dict[str, str]:
    job = await build_report.delay_async(req.rows, req.fail)
    return {"id": job.id, "status": "queued"}


@app.get("/reports/{report_id}")
async def report_status(report_id: str, chute: Chute, wait: float = 0) -> dict[str, Any]:
    """?wait=SECONDS long-polls: the handler awaits the result without blocking the event loop."""
    job = chute.result(report_id)
    if wait > 0:
        with contextlib.suppress(Exception):  # a timeout or the task's error: reported below
            await job.wait(timeout=min(wait, 30.0))
    info = await job.info_async()
    if info is None:
        raise HTTPException(404, "no such report")
    out: dict[str, Any] = {"id": report_id, "status": info.state.value}
    if info.state is chute_lib.State.SUCCEEDED:
        out["result"] = await job.wait(timeout=0)
    elif info.error is not None:
        out["error"] = f"{info.error.type}: {info.error.message}"
    return out
