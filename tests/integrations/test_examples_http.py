"""Every example app under examples/, served by its framework's real server, with a real chute worker.

On SQLite and on Redis: the job completes, and GET /reports/<id> shows every state it passes through;
and, measured in the timing phase, POST /reports answers within 20 ms (scenario.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from integrations import scenario
from web import WEB_BROKERS, broker, free_port, process

pytestmark = pytest.mark.slow

PY = sys.executable
ASYNC = {"fastapi", "aiohttp", "tornado"}  # their GET also long-polls: ?wait= awaits the result in the handler
CHUTE_WORKER = [PY, "-m", "chute", "worker", "reports:chute", "--log-level", "ERROR"]
GUNICORN = [PY, "-m", "gunicorn", "-b", "127.0.0.1:{port}", "-w", "1", "--no-control-socket", "--log-level", "warning"]
SERVERS: dict[str, tuple[list[str], list[str]]] = {  # example: (worker command, server command; {port} filled in)
    "flask": (CHUTE_WORKER, [PY, "-m", "flask", "--app", "reports", "run", "--port", "{port}", "--no-reload"]),
    "fastapi": (CHUTE_WORKER, [PY, "-m", "uvicorn", "reports:app", "--port", "{port}", "--log-level", "warning"]),
    "aiohttp": (CHUTE_WORKER, [PY, "reports.py", "--port", "{port}"]),
    "bottle": (CHUTE_WORKER, [PY, "serve.py", "--port", "{port}"]),  # gevent
    "tornado": (CHUTE_WORKER, [PY, "reports.py", "--port", "{port}"]),
    "wsgi": (CHUTE_WORKER, [*GUNICORN, "reports:application"]),
    "pyramid": ([PY, "-m", "chute", "worker", "worker:chute", "--log-level", "ERROR"],
                [*GUNICORN, "--paste", "development.ini"]),
    "django": ([PY, "manage.py", "chute_worker", "--log-level", "ERROR"], [*GUNICORN, "reports_site.wsgi"]),
}


@contextmanager
def serving(example: str, kind: str, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """The example's server on a fresh broker: (its base URL, the broker URL, the example's folder)."""
    _, command = SERVERS[example]
    folder = scenario.copy_example(example, tmp_path)
    ini = folder / "development.ini"
    port = free_port()
    cmd = [part.replace("{port}", str(port)) for part in command]
    with broker(kind, tmp_path) as url:
        if ini.exists():  # Pyramid reads its broker from the .ini (chute.url), not from CHUTE_URL
            ini.write_text(ini.read_text().replace("chute.url = sqlite:///reports.db", f"chute.url = {url}"))
        with process(cmd, url, cwd=folder, port=port, REPORT_SECONDS=scenario.REPORT_SECONDS):
            yield f"http://127.0.0.1:{port}", url, folder


@pytest.mark.brokers(*WEB_BROKERS)
@pytest.mark.parametrize("example", sorted(SERVERS))
def test_example_over_http(example: str, kind: str, tmp_path: Path) -> None:
    worker_cmd = SERVERS[example][0]
    with serving(example, kind, tmp_path) as (base, url, folder):
        measured = scenario.run(base, lambda: process(worker_cmd, url, cwd=folder,
                                                      REPORT_SECONDS=scenario.REPORT_SECONDS),
                                long_poll=example in ASYNC)
    print(f"{example}/{kind}: POST /reports ms {measured['post_ms']}")


@pytest.mark.timing
@pytest.mark.brokers(*WEB_BROKERS)
@pytest.mark.parametrize("example", sorted(SERVERS))
def test_example_answers_a_post_within_20_ms(example: str, kind: str, tmp_path: Path) -> None:
    with serving(example, kind, tmp_path) as (base, _, _):
        _, took = scenario.post_jobs(base)
    scenario.answered_at_once(took)
