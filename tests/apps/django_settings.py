"""Django settings for tests/integrations/test_django.py: two chute backends, a SQLite database."""

import os

SECRET_KEY = "tests"
USE_TZ = True
INSTALLED_APPS = ["chute.integrations.django", "apps.djtasks"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DJANGO_DB"]}}
CHUTE = {"URL": os.environ["CHUTE_URL"], "RESULT_TTL": "600"}
TASKS = {
    "default": {"BACKEND": "chute.integrations.django.ChuteBackend"},
    "once": {"BACKEND": "chute.integrations.django.ChuteBackend", "OPTIONS": {"RETRIES": 0}},
}
