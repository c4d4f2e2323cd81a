"""Settings of the example project: Django's Tasks framework on chute.

    cd examples/django
    python manage.py chute_worker               # the worker
    python manage.py runserver                  # or: gunicorn reports_site.wsgi
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "only-for-the-example")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "reports_site.urls"
WSGI_APPLICATION = "reports_site.wsgi.application"
INSTALLED_APPS = ["chute.integrations.django", "reports"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3",
                "ATOMIC_REQUESTS": True},  # each view is a transaction: its tasks are sent when it commits
}

CHUTE = {"URL": os.environ.get("CHUTE_URL", "sqlite:///reports.db")}
TASKS = {
    "default": {
        "BACKEND": "chute.integrations.django.ChuteBackend",
        "QUEUES": ["default"],
        "OPTIONS": {"RETRIES": 1, "RETRY_BACKOFF": 0.5},  # ENQUEUE_ON_COMMIT is on by default
    },
}
REPORT_SECONDS = float(os.environ.get("REPORT_SECONDS", "1.0"))
