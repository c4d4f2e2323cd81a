"""Tornado + chute: POST /reports starts a slow report and answers at once; GET /reports/<id> follows it.

    cd examples/tornado
    chute worker reports:chute                  # the worker
    python reports.py --port 8888               # the web app, in another terminal

CHUTE_URL picks the broker (default: reports.db here).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from typing import Any

from tornado.web import Application, HTTPError, RequestHandler

import chute as chute_lib
from chute.integrations.tornado import ChuteMixin

chute = chute_lib.App(os.environ.get("CHUTE_URL", "sqlite:///reports.db"))


@chute.task(retries=1, retry_backoff=0.5)
def build_report(rows: int, fail: bool = False) -> dict[str, Any]:
    time.sleep(float(os.environ.get("REPORT_SECONDS", "1.0")))
    if fail:
        raise RuntimeError(f"report of {rows} rows failed")
    return {"rows": rows, "total": sum(range(rows))}


class Reports(ChuteMixin, RequestHandler):
    async def post(self) -> None:
        body = json.loads(self.request.body or b"{}")
        job = await build_report.delay_async(int(body.get("rows", 10)), bool(body.get("fail", False)))
        self.set_status(202)
        self.write({"id": job.id, "status": "queued"})


class Report(ChuteMixin, RequestHandler):
    async def get(self, report_id: str) -> None:
        """?wait=SECONDS long-polls: the handler awaits the result without blocking the IOLoop."""
        job = self.chute.result(report_id)
        wait = float(self.get_argument("wait", "0"))
        if wait > 0:
            with contextlib.suppress(Exception):  # a timeout or the task's error: reported below
                await job.wait(timeout=min(wait, 30.0))
        info = await job.info_async()
        if info is None:
            raise HTTPError(404)
        out: dict[str, Any] = {"id": report_id, "status": info.state.value}
        if info.state is chute_lib.State.SUCCEEDED:
            out["result"] = await job.wait(timeout=0)
        elif info.error is not None:
            out["error"] = f"{info.error.type}: {info.error.message}"
        self.write(out)


def make_app() -> Application:
    return Application([(r"/reports", Reports), (r"/reports/([0-9a-z.:-]+)", Report)], chute=chute)


async def main(port: int) -> None:
    make_app().listen(port, address="127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8888)
    asyncio.run(main(parser.parse_args().port))
