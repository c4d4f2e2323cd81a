"""The django.tasks backend through Django's own API, with a real `manage.py`-style worker process.

Django runs in processes of its own here (tests/test_outbox_django.py configures it in-process).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TESTS
from web import WEB_BROKERS, broker, env, process

django = pytest.importorskip("django")
if django.VERSION < (6, 0):
    pytest.skip("django.tasks needs Django >= 6.0", allow_module_level=True)


@pytest.mark.brokers(*WEB_BROKERS)
def test_django_tasks_run_on_chute_workers(kind: str, tmp_path: Path) -> None:
    with broker(kind, tmp_path) as url:
        extra = {"DJANGO_SETTINGS_MODULE": "apps.django_settings", "DJANGO_DB": str(tmp_path / "django.db")}
        worker = [sys.executable, "-m", "chute", "worker", "chute.integrations.django.worker:app", "-q",
                  "default", "--log-level", "ERROR"]
        with process(worker, url, cwd=TESTS, **extra):
            out = subprocess.run([sys.executable, "-m", "apps.django_checks"], cwd=TESTS, env=env(url, **extra),
                                 capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "django checks passed" in out.stdout
