"""The OpenAPI 3.1 document of the JSON API, built from the endpoint table and msgspec's schemas."""

from __future__ import annotations

from typing import Any

import msgspec

from .jsonapi import ENDPOINTS, Endpoint

EXTRA_PATHS: dict[str, dict[str, Any]] = {
    "/api/stream": {"get": {
        "summary": "Live updates as server-sent events: `overview` and `workers` events with the JSON of "
                   "/api/overview and /api/workers",
        "operationId": "stream",
        "parameters": [{"name": "topics", "in": "query", "schema": {"type": "string"},
                        "description": "Comma-separated: overview, workers (default both)."}],
        "responses": {"200": {"description": "An event stream", "content": {"text/event-stream": {}}}}}},
    "/metrics": {"get": {
        "summary": "Prometheus metrics (text exposition format)", "operationId": "metrics",
        "responses": {"200": {"description": "Metrics", "content": {"text/plain": {}}}}}},
}


def document(version: str) -> dict[str, Any]:
    types: list[Any] = []
    for e in ENDPOINTS:
        types += [t for t in (e.response, e.body) if t is not None]
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    by_type = iter(schemas)
    paths: dict[str, dict[str, Any]] = {}
    for e in ENDPOINTS:
        response = next(by_type) if e.response is not None else None
        body = next(by_type) if e.body is not None else None
        paths.setdefault(e.path, {})[e.method.lower()] = _operation(e, response, body)
    paths.update(EXTRA_PATHS)
    return {
        "openapi": "3.1.0",
        "info": {"title": "chute dashboard API", "version": version,
                 "description": "Read and act on chute's queues, workers, tasks, dead letters, workflows and "
                                "schedules. Secrets in arguments, results and errors are masked."},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "CHUTE_DASHBOARD_TOKEN"},
            "basic": {"type": "http", "scheme": "basic",
                      "description": "CHUTE_DASHBOARD_USER and CHUTE_DASHBOARD_PASSWORD"},
            "session": {"type": "apiKey", "in": "cookie", "name": "chute_session",
                        "description": "Set by POST /login"}}},
        "security": [{"bearer": []}, {"basic": []}, {"session": []}],
    }


def _operation(e: Endpoint, response: dict[str, Any] | None, body: dict[str, Any] | None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": e.summary,
        "operationId": getattr(e.handler, "__name__", e.path),
        "parameters": [{"name": p.name, "in": p.where, "required": p.where == "path", "description": p.description,
                        "schema": p.schema} for p in e.params],
        "responses": {"200": {"description": "OK", "content": {e.media_type: {"schema": response or {}}}},
                      "400": {"description": "Bad parameters"},
                      "401": {"description": "Credentials required"}},
    }
    if e.path == "/health":
        op["security"] = []
        op["responses"] = {"200": op["responses"]["200"], "503": {"description": "Unhealthy (same body)"}}
    if "{" in e.path:
        op["responses"]["404"] = {"description": "Not found"}
    if e.method == "POST":
        op["parameters"].append({"name": "X-CSRF-Token", "in": "header", "required": True, "schema": {"type": "string"},
                                 "description": "From GET /api/csrf, with its cookie"})
        op["responses"]["403"] = {"description": "Missing or foreign CSRF token, or a cross-site Origin"}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op
