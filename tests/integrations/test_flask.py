"""The Flask example, served by Flask's own server, with a real chute worker."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import chute
from chute.errors import ConfigurationError
from integrations import scenario
from web import BROKERS, broker, free_port, process, worker

pytest.importorskip("flask")


@pytest.mark.parametrize("kind", BROKERS)
def test_flask_example(kind: str, tmp_path: Path) -> None:
    folder = scenario.copy_example("flask", tmp_path)
    port = free_port()
    with broker(kind, tmp_path) as url:
        cmd = [sys.executable, "-m", "flask", "--app", "reports", "run", "--port", str(port), "--no-reload"]
        with process(cmd, url, cwd=folder, port=port, REPORT_SECONDS=scenario.REPORT_SECONDS):
            scenario.run(f"http://127.0.0.1:{port}",
                         lambda: worker("reports:chute", url, cwd=folder, REPORT_SECONDS=scenario.REPORT_SECONDS))


def test_extension_reads_app_config_and_runs_tasks_in_the_app_context(tmp_path: Path) -> None:
    from flask import Flask, current_app

    from chute.integrations.flask import Chute

    ext = Chute()

    @ext.task
    def whoami() -> str:
        return str(current_app.config["WHO"])

    with pytest.raises(ConfigurationError, match="init_app"):
        whoami.delay()
    app = Flask("demo")
    app.config.update(CHUTE_URL=f"sqlite:///{tmp_path}/f.db", CHUTE_RESULT_TTL="60", CHUTE_EAGER=True, WHO="demo")
    ext.init_app(app)
    assert app.extensions["chute"] is ext and ext.result_ttl == 60.0 and ext.eager
    assert whoami.delay().get(timeout=5) == "demo"  # eager: run inline, inside the app context
    with pytest.raises(ConfigurationError, match="one Chute per Flask app"):
        ext.init_app(Flask("other"))
    ext.close()

    bad = Flask("bad")
    bad.config["CHUTE_RESULT_TTLL"] = 5
    with pytest.raises(ConfigurationError, match="CHUTE_RESULT_TTLL"):
        Chute(bad)
    assert isinstance(ext, chute.App)
