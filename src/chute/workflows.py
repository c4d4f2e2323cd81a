"""Workflows: chain, group, chord and DAGs of named steps, composed with `|`.

Every workflow compiles to one DAG of steps, stored in the result store when it starts. Roots are
sent at once; when a step succeeds, the worker records its result, then for each child adds the
step to the child's set of finished parents (an atomic set-add in the store). A child whose set is
complete is sent with the idempotency key `workflow:<id>:<step>`, so however many members finish
at once, or are redelivered, a fan-in step is sent exactly once. All of this happens before the
finishing step is acknowledged: a crash in between runs the step again, never stalls the workflow.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from .canvas import DAG, Canvas, Definition, Signature, Step, chain, chord, group
from .envelope import WorkflowLink, new_id
from .states import State

if TYPE_CHECKING:
    from .core import Core

__all__ = ["DAG", "Signature", "Workflow", "advance", "chain", "chord", "group", "start"]

_encode_def = msgspec.json.Encoder().encode
_decode_def = msgspec.json.Decoder(Definition).decode


def _key(workflow_id: str) -> str:
    return f"chute.workflow:{workflow_id}"


def start(app: Core, canvas: Canvas) -> Workflow:
    wid = new_id()
    kind = type(canvas).__name__.lower()
    steps, _, exits = canvas.steps("s") if not isinstance(canvas, DAG) else canvas.steps("")
    for s in steps:
        app.get_task(s.call.task)  # an unknown task fails here, before anything is sent
        app.codec.check_args(s.call.args, s.call.kwargs, f"{s.call.task} (step {s.name})")
        s.task_id = new_id()
    definition = Definition(wid, kind, steps, exits, time.time())
    app.results.set_meta(_key(wid), _encode_def(definition).decode())
    _send(app, definition, [s for s in steps if not s.after])
    return Workflow(app, wid)


def _send(app: Core, d: Definition, steps: Sequence[Step], parent_values: dict[str, Any] | None = None) -> None:
    from .brokers.base import Outgoing

    outs: list[Outgoing] = []
    values = parent_values or {}
    by_name = {s.name: s for s in d.steps}
    for s in steps:
        args = tuple(s.call.args)
        if s.feed == "one":
            args = (values[s.after[0]], *args)
        elif s.feed == "all":
            args = ([values[p] for p in s.after], *args)
        task = app.get_task(s.call.task)
        options = {**s.call.options, "idempotency_key": f"workflow:{d.id}:{s.name}"}
        env, out = app.producer.envelope(task, args, dict(s.call.kwargs), options, time.time(),
                                         task_id=s.task_id, workflow=WorkflowLink(d.id, s.name))
        outs.append(out)
    del by_name
    if outs:
        app.producer.publish(outs)  # in the open batch, if any; waiting for room where a queue blocks


def advance(app: Core, link: WorkflowLink) -> None:
    """A step succeeded (its result is stored): send every child whose parents have all succeeded."""
    raw = app.results.get_meta(_key(link.id))
    if raw is None:
        return
    d = _decode_def(raw)
    if d.cancelled:
        return
    ready: list[Step] = []
    for child in d.steps:
        if link.step in child.after:
            done = app.results.join(f"{_key(d.id)}:{child.name}", link.step, max(app.result_ttl, 86400.0))
            if done >= len(child.after):
                ready.append(child)
    if not ready:
        return
    by_name = {s.name: s for s in d.steps}
    needed = {p for c in ready if c.feed != "none" for p in c.after}
    values = {p: app.result(by_name[p].task_id).get(timeout=0) for p in needed}
    _send(app, d, ready, values)


def overall_state(cancelled: bool, steps: Sequence[State]) -> State:
    """A workflow's state from its steps' states."""
    if cancelled:
        return State.CANCELLED
    if any(x in (State.FAILED, State.DEAD) for x in steps):
        return State.FAILED
    if all(x is State.SUCCEEDED for x in steps):
        return State.SUCCEEDED
    if any(x in (State.STARTED, State.SUCCEEDED, State.RETRYING) for x in steps):
        return State.STARTED
    return State.QUEUED


class Workflow:
    """A handle on a started workflow: its state, each step's state, its result; cancel it."""

    def __init__(self, app: Core, workflow_id: str) -> None:
        self.app = app
        self.id = workflow_id

    def definition(self) -> Definition:
        raw = self.app.results.get_meta(_key(self.id))
        if raw is None:
            raise KeyError(f"no workflow {self.id!r}")
        return _decode_def(raw)

    def steps(self) -> dict[str, State]:
        """Each step's state, by step name (QUEUED for steps not sent yet)."""
        return {s.name: (self.app.result(s.task_id).status if s.task_id else State.QUEUED)
                for s in self.definition().steps}

    @property
    def status(self) -> State:
        d = self.definition()
        return overall_state(d.cancelled, [self.app.result(s.task_id).status for s in d.steps])

    def step_result(self, name: str, timeout: float | None = None) -> Any:
        by_name = {s.name: s for s in self.definition().steps}
        return self.app.result(by_name[name].task_id).get(timeout=timeout)

    def get(self, timeout: float | None = None) -> Any:
        """The workflow's result: its last step's (a list for several), once every step succeeded."""
        d = self.definition()
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for name in d.result_steps:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            values.append(self.step_result(name, left))
        return values[0] if len(values) == 1 and d.kind != "group" else values

    def cancel(self) -> None:
        """No further steps are sent; steps not yet finished are cancelled."""
        d = self.definition()
        d.cancelled = True
        self.app.results.set_meta(_key(self.id), _encode_def(d).decode())
        for s in d.steps:
            self.app.cancel(s.task_id)
