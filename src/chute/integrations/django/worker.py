"""The worker's view of a Django project: `chute worker chute.integrations.django.worker:app`.

Sets Django up (DJANGO_SETTINGS_MODULE must be set), which imports every installed app's tasks.py.
`python manage.py chute_worker` runs the same thing with the project's settings already chosen.
"""

from __future__ import annotations

import django

django.setup()

from .apps import get_app  # noqa: E402  (after setup: the settings must be ready)

app = get_app()
