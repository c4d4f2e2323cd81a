"""Django tasks (django.tasks): found by the chute app in INSTALLED_APPS, run by `manage.py chute_worker`."""

import time

from django.conf import settings
from django.tasks import task


@task
def build_report(rows: int, fail: bool = False) -> dict[str, int]:
    time.sleep(settings.REPORT_SECONDS)
    if fail:
        raise RuntimeError(f"report of {rows} rows failed")
    return {"rows": rows, "total": sum(range(rows))}
