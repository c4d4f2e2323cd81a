"""The Flask extension (its example runs over HTTP in test_examples_http.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import chute
from chute.errors import ConfigurationError

pytest.importorskip("flask")


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
