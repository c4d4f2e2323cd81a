"""Every example app under examples/, served by its framework's real server, with a real chute worker.

On SQLite and on Redis: POST /reports answers within 20 ms, the job completes, and GET /reports/<id>
shows every state it passes through (scenario.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from integrations import scenario
from web import BROKERS, broker, free_port, process, worker

PY = sys.executable
SERVERS: dict[str, tuple[str, list[str]]] = {  # example: (worker spec, server command; {port} filled in)
    "flask": ("reports:chute", [PY, "-m", "flask", "--app", "reports", "run", "--port", "{port}", "--no-reload"]),
    "fastapi": ("reports:chute", [PY, "-m", "uvicorn", "reports:app", "--port", "{port}", "--log-level", "warning"]),
    "aiohttp": ("reports:chute", [PY, "reports.py", "--port", "{port}"]),
    "tornado": ("reports:chute", [PY, "reports.py", "--port", "{port}"]),
    "wsgi": ("reports:chute", [PY, "-m", "gunicorn", "-b", "127.0.0.1:{port}", "-w", "1", "--no-control-socket",
                       "reports:application"]),
}


@pytest.mark.parametrize("kind", BROKERS)
@pytest.mark.parametrize("example", sorted(SERVERS))
def test_example_over_http(example: str, kind: str, tmp_path: Path) -> None:
    spec, command = SERVERS[example]
    folder = scenario.copy_example(example, tmp_path)
    port = free_port()
    cmd = [part.replace("{port}", str(port)) for part in command]
    with broker(kind, tmp_path) as url:
        with process(cmd, url, cwd=folder, port=port, REPORT_SECONDS=scenario.REPORT_SECONDS):
            measured = scenario.run(f"http://127.0.0.1:{port}",
                                    lambda: worker(spec, url, cwd=folder, REPORT_SECONDS=scenario.REPORT_SECONDS))
    print(f"{example}/{kind}: POST /reports ms {measured['post_ms']}")
