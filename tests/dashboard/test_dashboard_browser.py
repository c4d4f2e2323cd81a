"""The dashboard in a real browser (Playwright driving Debian's chromium) against a real worker, scheduler
and dashboard process: log in, load every page, replay a dead-lettered task and see it succeed.

Screenshots go to the test's temporary folder, or to $CHUTE_SCREENSHOTS_DIR: `make screenshots`
refreshes docs/images/ (the README and docs/operations.md show them). Without chromium the test
skips locally and fails under CI=true or CHUTE_REQUIRE_SERVICES=1 (`make test` installs chromium
when it runs as root).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import chute
from helpers import ROOT, TESTS, env_for, start_worker, stop, wait_for

from .support import SCRIPT, SECRETS, Seeded, dashboard, seed, stub_app

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "browser-token-0123456789abcdef"


def services_required() -> bool:  # as tests/conftest.py decides for Redis and the others
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("CHUTE_REQUIRE_SERVICES") == "1"


def _require_chromium() -> None:
    problem = None
    if not os.access(CHROMIUM, os.X_OK):
        problem = f"chromium is not installed at {CHROMIUM} (apt-get install chromium; `make test` does it as root)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError as exc:
            problem = f"the Python package playwright is missing ({exc}); it is in the dev extra"
    if problem:
        if services_required():
            pytest.fail(problem + "; CI requires the browser test")
        pytest.skip(problem)


@pytest.fixture
def page() -> Iterator[Any]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 820})
            context.set_default_timeout(30_000)
            pg = context.new_page()
            pg.problems = []  # console errors (a CSP violation is one) and uncaught exceptions
            pg.on("console", lambda m: pg.problems.append(m.text) if m.type == "error" else None)
            pg.on("pageerror", lambda exc: pg.problems.append(str(exc)))
            yield pg
            context.close()
        finally:
            browser.close()


def shots(tmp_path: Path) -> Path:
    """Where screenshots go: the test's own folder, or docs/images/ with CHUTE_SCREENSHOTS_DIR=docs/images
    (`make screenshots`), so a test run never rewrites tracked files."""
    folder = Path(os.environ["CHUTE_SCREENSHOTS_DIR"]) if os.environ.get("CHUTE_SCREENSHOTS_DIR") else tmp_path
    if not folder.is_absolute():
        folder = ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.timeout(300)
def test_every_page_in_a_browser_and_a_replayed_task_succeeds(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    s: Seeded = seed(tmp_path)
    app, tasks = stub_app(s.url)
    dag = (chute.DAG("etl").step("extract", tasks["add"].s(1, 1)).step("clean", tasks["add"].s(2, 2), after=["extract"])
           .step("enrich", tasks["add"].s(3, 3), after=["extract"])
           .step("load", tasks["add"].s(4, 4), after=["clean", "enrich"])).run(app)
    env = s.env(CHUTE_DASHBOARD_TOKEN=TOKEN)
    worker = start_worker(s.url, "apps.ops:app", CHUTE_TEST_FIX=str(s.fix))
    scheduler = subprocess.Popen([sys.executable, "-m", "chute", "scheduler", "apps.ops:app", "--log-level", "WARNING"],
                                 env=env_for(s.url), cwd=str(TESTS))
    out = shots(tmp_path)
    try:
        wait_for(lambda: dag.status is chute.State.SUCCEEDED, timeout=60, what="the DAG to finish")
        with dashboard(env) as base:
            page.goto(base + "/")
            expect(page).to_have_url(re.compile(r"/login\?next="))
            page.fill("input[name=token]", TOKEN)
            page.click("form.login button[type=submit]")
            expect(page.locator("h1")).to_have_text("Overview")
            expect(page.locator("#live-status")).to_have_class(re.compile(r"\bon\b"))  # SSE connected
            expect(page.locator('[data-live="workers_alive"]')).to_have_text("1")
            expect(page.locator("#chart-throughput rect.bar.ok").first).to_be_visible()
            page.screenshot(path=str(out / "overview.png"), full_page=True)

            page.goto(base + "/workers")
            expect(page.locator("#workers .state-online")).to_have_count(1)
            page.screenshot(path=str(out / "workers.png"), full_page=True)

            page.goto(base + "/tasks?state=dead")
            expect(page.locator("#tasks tbody tr")).to_have_count(2)
            page.screenshot(path=str(out / "tasks.png"), full_page=True)

            page.goto(f"{base}/tasks/{s.charge}")
            expect(page.locator("h1 .state")).to_have_text("dead")
            expect(page.locator("#kwargs")).to_contain_text(SCRIPT)  # shown as text, never run
            expect(page.locator("#args")).to_contain_text('"***"')
            expect(page.locator("#timeline tbody tr")).to_have_count(2)
            page.screenshot(path=str(out / "task.png"), full_page=True)

            page.goto(base + "/workflows")
            expect(page.locator("#workflows tbody tr")).to_have_count(2)
            page.goto(f"{base}/workflows/{dag.id}")
            expect(page.locator("#workflow-graph rect.node.state-succeeded")).to_have_count(4)
            page.screenshot(path=str(out / "workflow.png"), full_page=True)

            page.goto(base + "/schedules")
            wait_for(lambda: page.reload() or "ok" in (page.get_attribute("#scheduler", "class") or ""),
                     timeout=60, what="the scheduler to be shown active")
            page.screenshot(path=str(out / "schedules.png"), full_page=True)

            page.goto(base + "/dlq")
            expect(page.locator("#dead tbody tr")).to_have_count(2)
            page.screenshot(path=str(out / "dlq.png"), full_page=True)
            for secret in SECRETS:
                assert secret not in page.content()

            s.fix.write_text("fixed")  # the gateway is back: a replay now succeeds
            dialogs: list[str] = []
            page.once("dialog", lambda d: (dialogs.append(d.message), d.accept()))
            page.check(f'input[name=ids][value="{s.charge}"]')
            page.click("#replay-selected")
            expect(page.locator(".flash")).to_have_text("Replayed 1 message(s).")
            assert dialogs == ["Replay the selected messages?"]
            page.goto(f"{base}/tasks/{s.charge}")
            expect(page.locator("h1 .state")).to_have_text("succeeded", timeout=60_000)  # the page reloads itself
            expect(page.locator("#result")).to_contain_text('"charged"')
            expect(page.locator("#result")).not_to_contain_text("sess-999")
            page.goto(base + "/dlq")
            expect(page.locator("#dead tbody tr")).to_have_count(1)
        assert page.problems == []
    finally:
        stop(scheduler)
        stop(worker)
        app.close()
