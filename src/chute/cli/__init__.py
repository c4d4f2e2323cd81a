"""The `chute` command: worker, scheduler, dashboard, status, send, dlq, demo."""

from __future__ import annotations

from . import dlq, look, run
from .base import load_app, main

__all__ = ["dlq", "load_app", "look", "main", "run"]

if __name__ == "__main__":
    main()
