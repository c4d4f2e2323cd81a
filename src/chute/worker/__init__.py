"""The worker: a consumer loop per process, and a supervisor for several processes.

Loaded lazily: a producer that only sends tasks never imports the worker's machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .consumer import Worker
    from .job import Job, Outcome

__all__ = ["Job", "Outcome", "Worker"]


def __getattr__(name: str) -> Any:
    if name == "Worker":
        from .consumer import Worker

        return Worker
    if name in ("Job", "Outcome"):
        from . import job

        return getattr(job, name)
    raise AttributeError(f"module 'chute.worker' has no attribute {name!r}")
