"""The operations side's read model: what the dashboard, its JSON API and the CLI show and do."""

from .api import STATES, Ops
from .history import History

__all__ = ["History", "Ops", "STATES"]
