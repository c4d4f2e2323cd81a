"""The worker's App, configured from the same .ini as the web app: `chute worker worker:chute`."""

import os

from chute.integrations.pyramid import from_ini

chute = from_ini(os.environ.get("PYRAMID_INI", "development.ini"))
