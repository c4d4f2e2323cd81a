"""Geometry for the dashboard's SVG: a workflow's steps as a layered graph, and per-minute bar charts.

Plain numbers only; the templates draw them (escaped), and dashboard.js redraws the charts from
the same data when live updates arrive.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ops.views import RatePoint, WorkflowView

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 170, 46, 60, 18, 12


@dataclass
class Node:
    name: str
    task: str
    task_id: str
    state: str
    x: float
    y: float


@dataclass
class Edge:
    path: str  # an SVG path from the parent's right edge to the child's left edge
    state: str  # the parent's state: a finished parent draws a solid edge


@dataclass
class Layout:
    nodes: list[Node]
    edges: list[Edge]
    width: float
    height: float


def layout(w: WorkflowView) -> Layout:
    """Columns by depth (longest path from a root), rows in definition order."""
    by_name = {s.name: s for s in w.steps}
    depth: dict[str, int] = {}

    def level(name: str) -> int:
        if name not in depth:
            depth[name] = 0  # a guard; stored workflows are acyclic
            depth[name] = 1 + max((level(p) for p in by_name[name].after if p in by_name), default=-1)
        return depth[name]

    rows: dict[int, int] = {}
    nodes: dict[str, Node] = {}
    for s in w.steps:
        col = level(s.name)
        row = rows.get(col, 0)
        rows[col] = row + 1
        nodes[s.name] = Node(s.name, s.task, s.task_id, s.state, PAD + col * (NODE_W + GAP_X),
                             PAD + row * (NODE_H + GAP_Y))
    edges: list[Edge] = []
    for s in w.steps:
        child = nodes[s.name]
        for p in s.after:
            parent = nodes.get(p)
            if parent is None:
                continue
            x1, y1 = parent.x + NODE_W, parent.y + NODE_H / 2
            x2, y2 = child.x, child.y + NODE_H / 2
            mid = (x1 + x2) / 2
            edges.append(Edge(f"M{x1:g},{y1:g} C{mid:g},{y1:g} {mid:g},{y2:g} {x2:g},{y2:g}", parent.state))
    cols = max(rows, default=0) + 1
    height = max(rows.values(), default=1)
    return Layout(list(nodes.values()), edges, 2 * PAD + cols * NODE_W + (cols - 1) * GAP_X,
                  2 * PAD + height * NODE_H + (height - 1) * GAP_Y)


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    kind: str  # ok or bad
    title: str


def bars(rates: list[RatePoint], width: float = 720, height: float = 140) -> tuple[list[Bar], int]:
    """Stacked bars, one a minute: successes under failures (failed + dead). Returns bars and the scale top."""
    top = max((r.succeeded + r.failed + r.dead for r in rates), default=0) or 1
    step = width / max(1, len(rates))
    out: list[Bar] = []
    for i, r in enumerate(rates):
        bad = r.failed + r.dead
        h_ok, h_bad = r.succeeded / top * height, bad / top * height
        label = f"{r.succeeded} succeeded, {bad} failed, {r.retried} retried"
        if r.succeeded:
            out.append(Bar(i * step, height - h_ok, max(1.0, step - 1), h_ok, "ok", label))
        if bad:
            out.append(Bar(i * step, height - h_ok - h_bad, max(1.0, step - 1), h_bad, "bad", label))
    return out, top


def failure_points(rates: list[RatePoint], width: float = 720, height: float = 140) -> str:
    """An SVG polyline's points: each minute's (failed + dead) / finished, 0 for a quiet minute."""
    step = width / max(1, len(rates))
    points = []
    for i, r in enumerate(rates):
        done = r.succeeded + r.failed + r.dead
        rate = (r.failed + r.dead) / done if done else 0.0
        points.append(f"{i * step + step / 2:.1f},{height - rate * height:.1f}")
    return " ".join(points)
