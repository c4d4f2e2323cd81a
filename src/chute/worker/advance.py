"""Advancing workflows: a success hook, as Dramatiq's pipelines are middleware.

A step's successors are sent after its SUCCEEDED record is stored and before it is acknowledged
(see `Middleware.after_success`): a crash in between runs the step again, never stalls the workflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..hooks import JobView, Middleware
from ..workflows import advance

if TYPE_CHECKING:
    from ..core import Core



class Advance(Middleware):
    """Sends each workflow step whose parents have all succeeded (workflows.advance)."""

    workflow_steps_only = True

    def __init__(self, app: Core) -> None:
        self.app = app

    def wants_success(self, job: JobView) -> bool:
        return job.envelope.workflow is not None

    def after_success(self, job: JobView, value: Any) -> None:
        link = job.envelope.workflow
        assert link is not None
        advance(self.app, link)
