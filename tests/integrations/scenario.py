"""The one story every example app must tell, over real HTTP with a real worker process.

POST /reports answers within 20 ms (the median of several, measured by the client, so it includes
the server's whole handling: `post_jobs` and `answered_at_once`, in the timing phase); GET /reports/<id>
then shows each state the job passes through (`run`).
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from helpers import ROOT
from web import call

REPORT_SECONDS = "0.5"  # how long each example's job sleeps (sleeps: it must not compete for the CPU)


def copy_example(name: str, tmp_path: Path) -> Path:
    """The example's folder, copied so its SQLite file and caches stay in the test's tmp dir."""
    folder = tmp_path / name
    shutil.copytree(ROOT / "examples" / name, folder, ignore=shutil.ignore_patterns("__pycache__", "*.db*"))
    return folder


def post_jobs(base: str) -> tuple[list[str], list[float]]:
    """POST seven jobs to the example at `base` (no worker yet: each POST is the enqueue alone); their ids
    and the seconds each POST took."""
    took, ids = [], []
    for rows in range(1, 8):
        status, body, seconds = call("POST", f"{base}/reports", {"rows": rows})
        assert status == 202, (status, body)
        ids.append(body["id"])
        took.append(seconds)
    return ids, took


def answered_at_once(took: list[float]) -> None:
    """The POSTs' median is under 20 ms."""
    median = statistics.median(took)
    assert median < 0.020, f"POST /reports took {[round(t * 1000, 1) for t in took]} ms (median {median * 1000:.1f})"


def run(base: str, start_worker: Callable[[], AbstractContextManager[Any]], *, long_poll: bool = False
        ) -> dict[str, Any]:
    """Drive the example at `base` through the whole story; return what was measured, for the report."""
    ids, took = post_jobs(base)
    status, failing, _ = call("POST", f"{base}/reports", {"rows": 1, "fail": True})
    assert status == 202, (status, failing)
    status, body, _ = call("GET", f"{base}/reports/{ids[0]}")
    assert (status, body["status"]) == (200, "queued"), body
    assert call("GET", f"{base}/reports/00000000000000000000000000000000")[0] == 404

    with start_worker():
        seen = follow(base, [ids[0], failing["id"]])
        if long_poll:  # GET ?wait= awaits the result inside the handler: one request, the final state
            _, job, _ = call("POST", f"{base}/reports", {"rows": 4})
            status, body, seconds = call("GET", f"{base}/reports/{job['id']}?wait=20", timeout=30)
            assert (status, body["status"], body["result"]["total"]) == (200, "succeeded", 6), body
            assert seconds >= float(REPORT_SECONDS) * 0.9, seconds
    ok, bad = seen[ids[0]], seen[failing["id"]]
    assert [s["status"] for s in ok] == ["queued", "started", "succeeded"], ok
    assert ok[-1]["result"]["rows"] == 1 and ok[-1]["result"]["total"] == 0, ok[-1]
    assert [s["status"] for s in bad] == ["queued", "started", "retrying", "started", "dead"], bad
    assert "report of 1 rows failed" in bad[-1]["error"], bad[-1]
    assert "report of 1 rows failed" in bad[2]["error"], bad[2]  # a retrying job shows its last error
    for i in ids[1:]:
        assert call("GET", f"{base}/reports/{i}")[1]["status"] in ("started", "succeeded")
    return {"post_ms": [round(t * 1000, 2) for t in took]}


def follow(base: str, ids: list[str], timeout: float = 30) -> dict[str, list[dict[str, Any]]]:
    """Poll each id every ~10 ms until it is final; each distinct status once, in the order seen."""
    seen: dict[str, list[dict[str, Any]]] = {i: [{"status": "queued"}] for i in ids}
    deadline = time.monotonic() + timeout
    while any(s[-1]["status"] not in ("succeeded", "failed", "dead") for s in seen.values()):
        assert time.monotonic() < deadline, f"jobs did not finish: {seen}"
        for i in ids:
            if seen[i][-1]["status"] in ("succeeded", "failed", "dead"):
                continue
            status, body, _ = call("GET", f"{base}/reports/{i}")
            assert status == 200, (status, body)
            if body["status"] != seen[i][-1]["status"]:
                seen[i].append(body)
        time.sleep(0.01)  # the pace of a polling client, not a wait for the work
    return seen
