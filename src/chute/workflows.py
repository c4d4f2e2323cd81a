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
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from .envelope import WorkflowLink, new_id
from .errors import ConfigurationError
from .states import State
from .task import Signature

if TYPE_CHECKING:
    from .core import Core

Feed = Literal["none", "one", "all"]  # what a step receives from its parents: nothing, the one result, all results


class Step(msgspec.Struct):
    """One step: a task call, the steps it waits for, and how their results reach it."""

    name: str
    call: Signature
    after: list[str] = msgspec.field(default_factory=list)
    feed: Feed = "none"
    task_id: str = ""


class Definition(msgspec.Struct):
    """What is stored: the steps, in order, and which step's result is the workflow's result."""

    id: str
    kind: str
    steps: list[Step]
    result_steps: list[str]
    created: float = 0.0
    cancelled: bool = False


class Canvas:
    """Something that compiles to steps: a Signature wrapper, chain, group, chord or DAG."""

    def steps(self, prefix: str) -> tuple[list[Step], list[str], list[str]]:
        """(steps, entry step names, exit step names)."""
        raise NotImplementedError

    def __or__(self, other: Canvas | Signature) -> Canvas:
        right = as_canvas(other)
        if isinstance(self, Group):
            return Chord(self, right)
        return Chain(*(self.parts if isinstance(self, Chain) else [self]), right)

    def run(self, app: Core) -> Workflow:
        """Validate every step, store the workflow and send its first steps; return its handle."""
        return start(app, self)


def as_canvas(x: Canvas | Signature) -> Canvas:
    return x if isinstance(x, Canvas) else One(x)


class One(Canvas):
    def __init__(self, call: Signature) -> None:
        self.call = call

    def steps(self, prefix: str) -> tuple[list[Step], list[str], list[str]]:
        return [Step(prefix, self.call)], [prefix], [prefix]


class Chain(Canvas):
    """a → b → c: each step receives the previous step's result as its first argument."""

    def __init__(self, *parts: Canvas | Signature) -> None:
        if not parts:
            raise ConfigurationError("chain() needs at least one step")
        self.parts = [as_canvas(p) for p in parts]

    def steps(self, prefix: str) -> tuple[list[Step], list[str], list[str]]:
        out: list[Step] = []
        entries: list[str] = []
        exits: list[str] = []
        for i, part in enumerate(self.parts):
            steps, first, last = part.steps(f"{prefix}.{i}")
            for s in steps:
                if s.name in first and exits:
                    s.after = list(exits)
                    s.feed = "one" if len(exits) == 1 else "all"
            out += steps
            entries = entries or first
            exits = last
        return out, entries, exits


class Group(Canvas):
    """Steps in parallel; the group's result is the list of their results, in order."""

    def __init__(self, *parts: Canvas | Signature) -> None:
        if not parts:
            raise ConfigurationError("group() needs at least one step")
        self.parts = [as_canvas(p) for p in parts]

    def steps(self, prefix: str) -> tuple[list[Step], list[str], list[str]]:
        out: list[Step] = []
        entries: list[str] = []
        exits: list[str] = []
        for i, part in enumerate(self.parts):
            steps, first, last = part.steps(f"{prefix}.{i}")
            out += steps
            entries += first
            exits += last
        return out, entries, exits


class Chord(Canvas):
    """A group, then a callback that receives the list of all the group's results."""

    def __init__(self, header: Group | Iterable[Canvas | Signature], callback: Canvas | Signature) -> None:
        self.header = header if isinstance(header, Group) else Group(*header)
        self.callback = as_canvas(callback)

    def steps(self, prefix: str) -> tuple[list[Step], list[str], list[str]]:
        head, entries, exits = self.header.steps(f"{prefix}.h")
        tail, first, last = self.callback.steps(f"{prefix}.cb")
        for s in tail:
            if s.name in first:
                s.after, s.feed = list(exits), "all"
        return head + tail, entries, last


class DAG(Canvas):
    """Named steps with dependencies; a step runs once every step it names in `after` succeeded."""

    def __init__(self, name: str = "dag") -> None:
        self.name = name
        self._steps: dict[str, Step] = {}

    def step(self, name: str, call: Signature, after: Sequence[str] = ()) -> DAG:
        if name in self._steps:
            raise ConfigurationError(f"DAG {self.name!r}: two steps are named {name!r}")
        self._steps[name] = Step(name, call, list(after))
        return self

    def steps(self, prefix: str) -> tuple[list[Step], list[str], list[str]]:
        names = set(self._steps)
        for s in self._steps.values():
            unknown = [d for d in s.after if d not in names]
            if unknown:
                raise ConfigurationError(f"DAG {self.name!r}: step {s.name!r} depends on unknown step(s) "
                                         f"{', '.join(map(repr, unknown))}")
        _check_acyclic(self.name, self._steps)
        steps = [Step(s.name, s.call, list(s.after)) for s in self._steps.values()]
        has_children = {d for s in steps for d in s.after}
        return steps, [s.name for s in steps if not s.after], [s.name for s in steps if s.name not in has_children]


def _check_acyclic(name: str, steps: dict[str, Step]) -> None:
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cycle = path[path.index(n):] + [n]
            raise ConfigurationError(f"DAG {name!r} has a cycle: {' -> '.join(cycle)}")
        state[n] = 1
        for d in steps[n].after:
            visit(d, path + [n])
        state[n] = 2

    for n in steps:
        visit(n, [])


def chain(*parts: Canvas | Signature) -> Chain:
    return Chain(*parts)


def group(*parts: Canvas | Signature) -> Group:
    return Group(*parts)


def chord(header: Group | Iterable[Canvas | Signature], callback: Canvas | Signature) -> Chord:
    return Chord(header, callback)


# -- running ---------------------------------------------------------------------------------------
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
