"""The dashboard's JSON API, pages, live stream, metrics and health, against a real dashboard process."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from chute.dashboard.openapi import document
from chute.dashboard.server import routes
from helpers import env_for, start_worker, stop, wait_for

from .support import SCRIPT, SECRETS, Seeded, client, dashboard


@pytest.fixture(scope="module")
def base(seeded: Seeded) -> object:
    with dashboard(seeded.env()) as url:
        yield url


def test_a_dead_task_shows_its_arguments_masked_its_error_and_its_attempts(base: str, seeded: Seeded) -> None:
    with client(base) as c:
        t = c.get(f"/api/tasks/{seeded.charge}").json()
    assert t["state"] == "dead" and t["name"] == "shop.charge" and t["dead_letter"] is True
    assert t["args"] == ["A-1042", "***"] and t["kwargs"] == {"note": SCRIPT}  # masked by parameter name
    assert t["error"]["type"].endswith("ConnectionError") and "token=***" in t["error"]["message"]
    assert [(a["attempt"], a["outcome"]) for a in t["timeline"]] == [(0, "retried"), (1, "dead")]
    first = t["timeline"][0]
    assert first["received"] <= first["started"] <= first["finished"] and first["worker"]


def test_a_finished_task_shows_its_result_and_says_where_its_arguments_went(base: str, seeded: Seeded) -> None:
    with client(base) as c:
        t = c.get(f"/api/tasks/{seeded.ok[0]}").json()
        assert c.get("/api/tasks/no-such-task").status_code == 404
    assert t["state"] == "succeeded" and t["result"] == 0 and t["args"] is None and "gone" in t["args_note"]


def test_tasks_by_state_and_the_dead_letter_queue_with_filters(base: str, seeded: Seeded) -> None:
    with client(base) as c:
        dead = {x["id"] for x in c.get("/api/tasks", params={"state": "dead"}).json()}
        done = {x["id"] for x in c.get("/api/tasks", params={"state": "succeeded"}).json()}
        assert c.get("/api/tasks", params={"state": "bogus"}).status_code == 400
        by_task = c.get("/api/dlq", params={"task": "shop.login"}).json()
        by_text = c.get("/api/dlq", params={"q": "gateway"}).json()
        one = c.get(f"/api/dlq/{seeded.login}").json()
    assert dead == {seeded.charge, seeded.login} and set(seeded.ok) <= done
    assert [d["id"] for d in by_task] == [seeded.login] and by_task[0]["args"] == ["bob", "***"]
    assert [d["id"] for d in by_text] == [seeded.charge]
    assert one["error"]["type"].endswith("PermissionError") and "Traceback" in one["error"]["traceback"]


def test_overview_workers_workflows_and_schedules(base: str, seeded: Seeded) -> None:
    with client(base) as c:
        o = c.get("/api/overview").json()
        workers = c.get("/api/workers").json()
        flows = c.get("/api/workflows").json()
        flow = c.get(f"/api/workflows/{seeded.workflow}").json()
        sched = c.get("/api/schedules").json()
    assert o["queues"] == [{"queue": "default", "ready": 0, "in_flight": 0, "delayed": 0, "dead": 2}]
    assert len(o["rates"]) == 60 and o["succeeded_last_hour"] >= 7 and o["failed_last_hour"] == 2
    assert o["retried_last_hour"] == 1 and 0 < o["failure_rate"] < 1 and o["workers_alive"] == 0
    assert [w["state"] for w in workers] == ["offline"]  # the seeding worker said goodbye
    assert [f["id"] for f in flows] == [seeded.workflow] and flows[0]["state"] == "succeeded"
    assert [(s["name"], s["state"], s["after"]) for s in flow["steps"]] == [
        ("s.0", "succeeded", []), ("s.1", "succeeded", ["s.0"])]
    (report,) = sched["schedules"]
    assert report["name"] == "shop.report" and report["every"] == 3600 and report["next_run"] > time.time()


def test_every_page_renders_escaped_and_no_response_holds_a_secret(base: str, seeded: Seeded) -> None:
    pages = ["/", "/workers", "/tasks", "/tasks?state=dead", f"/tasks/{seeded.charge}", f"/tasks/{seeded.ok[0]}",
             "/dlq", "/dlq?queue=default&task=shop.charge", f"/dlq/{seeded.charge}", "/workflows",
             f"/workflows/{seeded.workflow}", "/schedules"]
    api = [r.path for r in routes() if getattr(r, "path", "").startswith("/api/") and "{" not in r.path
           and "GET" in (getattr(r, "methods", None) or ()) and r.path != "/api/stream"]
    api += ["/api/stream?count=1", f"/api/tasks/{seeded.charge}", f"/api/dlq/{seeded.login}", "/metrics"]
    with client(base) as c:
        for path in pages + api:
            r = c.get(path)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
            for secret in SECRETS:
                assert secret not in r.text, (path, secret)
            if path in pages:
                assert r.headers["content-type"].startswith("text/html")
                assert SCRIPT not in r.text, path  # escaped wherever it is shown
        task_page = c.get(f"/tasks/{seeded.charge}").text
        dlq_page = c.get("/dlq").text
        graph = c.get(f"/workflows/{seeded.workflow}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in task_page and "&lt;script&gt;" in dlq_page
    assert graph.count('class="node state-succeeded"') == 2 and "<path class=\"edge" in graph


def test_the_openapi_document_describes_every_api_route() -> None:
    doc = document("test")
    served = {(m, r.path) for r in routes() for m in (getattr(r, "methods", None) or ())
              if getattr(r, "path", "").startswith("/api/") and m != "HEAD" and r.path != "/api/openapi.json"}
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert served <= described
    assert doc["openapi"].startswith("3.1") and "TaskView" in doc["components"]["schemas"]
    replay = doc["paths"]["/api/dlq/replay"]["post"]
    assert "403" in replay["responses"] and replay["requestBody"]["content"]["application/json"]


def test_the_stream_sends_overview_and_workers_events(base: str) -> None:
    with client(base) as c, c.stream("GET", "/api/stream", params={"count": "2"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith(("event:", "data:"))]
    kinds = [e.split(": ", 1)[1] for e in events if e.startswith("event:")]
    assert kinds == ["overview", "workers", "overview", "workers"]
    assert json.loads(events[1].split(": ", 1)[1])["queues"][0]["dead"] == 2


def test_metrics_are_derived_from_stats_and_events(base: str) -> None:
    with client(base) as c:
        text = c.get("/metrics").text
    lines = set(text.splitlines())
    assert 'chute_queue_dead{queue="default"} 2.0' in lines and 'chute_queue_depth{queue="default"} 0.0' in lines
    assert "chute_workers 0.0" in lines and "chute_broker_up 1.0" in lines
    assert 'chute_tasks_dead_total{queue="default",task="shop.charge"} 1.0' in lines
    assert 'chute_tasks_retried_total{queue="default",task="shop.charge"} 1.0' in lines
    assert 'chute_tasks_processed_total{queue="default",task="shop.charge"} 2.0' in lines
    assert 'chute_task_duration_seconds_count{queue="default",task="shop.add"} 7.0' in lines
    assert any(line.startswith('chute_task_duration_seconds_bucket{le="+Inf",queue="default",task="shop.add"}')
               for line in lines)


def test_health_needs_a_recent_heartbeat(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/health.db"  # a broker of its own: the worker below would show in the seeded one's
    with dashboard(env_for(url), "--health-max-age", "5") as base, client(base) as c:
        sick = c.get("/health")
        assert sick.status_code == 503 and sick.json()["reasons"] == ["no worker is alive"]
        w = start_worker(url, "apps.ops:app")
        try:
            wait_for(lambda: c.get("/health").status_code == 200, timeout=30, what="healthy")
            h = c.get("/health").json()
            assert h["healthy"] and h["workers_alive"] == 1 and h["newest_heartbeat_age"] <= 5
        finally:
            stop(w)


def test_health_says_unhealthy_when_the_broker_is_unreachable(seeded: Seeded) -> None:
    env = seeded.env(CHUTE_URL="redis://:brokerpw@127.0.0.1:1/0")
    with dashboard(env) as url, client(url) as c:
        h = c.get("/health")
        page = c.get("/")
    assert h.status_code == 503 and h.json()["reasons"] == ["broker unreachable"] and not h.json()["broker"]
    assert page.status_code == 503 and "brokerpw" not in page.text and "redis://:***@127.0.0.1:1/0" in page.text
