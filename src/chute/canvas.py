"""The canvas: Signature (a call not sent yet) and chain, group, chord and DAG of them, composed with `|`.

Pure data: each compiles to one DAG of named steps (`Canvas.steps`); `workflows.py` stores and runs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol

import msgspec

from .errors import ConfigurationError
from .states import State


class Signature(msgspec.Struct, frozen=True):
    """A task call not sent yet: what `task.s(...)` returns and `app.send_many` takes."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    options: dict[str, Any] = msgspec.field(default_factory=dict)

    def set(self, **options: Any) -> Signature:
        """A copy with send options (countdown, eta, priority, queue, idempotency_key, …) added."""
        return Signature(self.task, self.args, self.kwargs, {**self.options, **options})

    def __or__(self, other: Any) -> Any:
        """`a.s() | b.s()` is chain(a.s(), b.s()); a group on the left makes a chord."""
        return One(self) | other


class WorkflowHandle(Protocol):
    """A started workflow (chute.workflows.Workflow)."""

    @property
    def id(self) -> str: ...

    @property
    def status(self) -> State: ...

    def steps(self) -> dict[str, State]: ...

    def get(self, timeout: float | None = None) -> Any: ...

    def cancel(self) -> None: ...


class Starter(Protocol):
    """What starts a workflow (chute.App)."""

    def start_workflow(self, canvas: Canvas) -> WorkflowHandle: ...


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

    def run(self, app: Starter) -> WorkflowHandle:
        """Validate every step, store the workflow and send its first steps; return its handle."""
        return app.start_workflow(self)

    def delay(self, *args: Any, **kwargs: Any) -> WorkflowHandle:
        """Refused with the call to make instead: a canvas names tasks, not the App that sends them."""
        raise TypeError(f"a {type(self).__name__.lower()} is started with .run(app) (or app.start_workflow(...)), "
                        "not .delay(): it names its tasks but not the App that sends them")


def as_canvas(x: Canvas | Signature) -> Canvas:
    if isinstance(x, Canvas):
        return x
    if isinstance(x, Signature):
        return One(x)
    raise TypeError(f"a workflow step is a task call, task.s(...), or a chain/group/chord, not "
                    f"{type(x).__name__}: write group(t.s(i) for i in ...) or group(t.s(1), t.s(2))")


def _parts(parts: tuple[Any, ...]) -> tuple[Canvas | Signature, ...]:
    """The steps given one by one, or as one iterable (a list, a generator: as Celery users write them)."""
    if len(parts) == 1 and not isinstance(parts[0], (Canvas, Signature)) and isinstance(parts[0], Iterable):
        return tuple(parts[0])
    return parts


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


def chain(*parts: Canvas | Signature | Iterable[Canvas | Signature]) -> Chain:
    """Steps one after another, each receiving the previous result: chain(a.s(), b.s()) or chain(iterable)."""
    return Chain(*_parts(parts))


def group(*parts: Canvas | Signature | Iterable[Canvas | Signature]) -> Group:
    """Steps in parallel: group(a.s(), b.s()) or group(t.s(i) for i in range(n))."""
    return Group(*_parts(parts))


def chord(header: Group | Iterable[Canvas | Signature], callback: Canvas | Signature) -> Chord:
    return Chord(header, callback)
