"""Dashboard security (RELIABILITY R24/R25): authentication on every route, CSRF and origin checks on
every POST, no GET changes anything, cookie flags, escaping and masking — against real dashboard processes."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator

import pytest

from chute.dashboard.server import routes
from helpers import TESTS

from .support import SECRETS, Seeded, client, dashboard

TOKEN = "test-token-0123456789abcdef"
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def base(seeded: Seeded) -> Iterator[str]:
    with dashboard(seeded.env(CHUTE_DASHBOARD_TOKEN=TOKEN)) as url:
        yield url


def crawl(seeded: Seeded) -> list[tuple[str, str]]:
    """(method, concrete path) for every route the router has: path parameters filled in with real ids."""
    ids = {"task_id": seeded.charge, "message_id": seeded.login, "workflow_id": seeded.workflow}
    out: list[tuple[str, str]] = []
    for r in routes():
        path = getattr(r, "path", "")
        methods = getattr(r, "methods", None)
        if methods is None:  # a mount: the static files
            out.append(("GET", path + "/dashboard.js"))
            continue
        concrete = re.sub(r"\{(\w+)\}", lambda m: ids[m[1]], path)
        out += [(m, concrete) for m in sorted(methods) if m != "HEAD"]
    return out


def auth() -> dict[str, str]:
    return {"authorization": f"Bearer {TOKEN}"}


def csrf_of(c: object, page: str = "/login") -> str:
    html = c.get(page).text  # type: ignore[attr-defined]
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html[:500]
    return match[1]


def test_every_route_but_health_refuses_an_unauthenticated_request(base: str, seeded: Seeded) -> None:
    targets = crawl(seeded)
    assert len(targets) >= 30 and ("POST", "/dlq/replay") in targets and ("GET", "/metrics") in targets
    with client(base) as c:
        for method, path in targets:
            r = c.request(method, path, headers={"origin": base} if method == "POST" else None)
            if path == "/health":
                assert r.status_code in (200, 503)
            elif path == "/login" and method == "GET":  # the login form, nothing else
                assert r.status_code == 200 and "sqlite" not in r.text and seeded.charge not in r.text
            elif path == "/login":
                assert r.status_code == 403, (method, path)  # a login needs the form's CSRF token
            elif r.status_code == 303:
                assert r.headers["location"].startswith("/login?next="), (method, path)
            else:
                assert r.status_code == 401, (method, path, r.status_code)
                assert "www-authenticate" in r.headers
            for secret in SECRETS:
                assert secret not in r.text


def test_wrong_credentials_are_refused_and_right_ones_let_in(base: str, seeded: Seeded) -> None:
    with client(base) as c:
        assert c.get("/api/overview", headers={"authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        assert c.get("/api/overview", headers=auth()).status_code == 200
        assert c.get("/", headers=auth()).status_code == 200


def test_login_sets_an_httponly_samesite_session_and_logout_ends_it(base: str) -> None:
    with client(base) as c:
        token = csrf_of(c)
        bad = c.post("/login", data={"token": "nope", "csrf_token": token, "next": "/dlq"}, headers={"origin": base})
        assert bad.status_code == 401 and "not right" in bad.text
        r = c.post("/login", data={"token": TOKEN, "csrf_token": token, "next": "/dlq"}, headers={"origin": base})
        assert r.status_code == 303 and r.headers["location"] == "/dlq"
        cookies = r.headers.get_list("set-cookie")
        session = next(h for h in cookies if h.startswith("chute_session="))
        assert "HttpOnly" in session and "SameSite=Strict" in session and "Max-Age=" in session
        assert c.get("/dlq").status_code == 200  # the cookie alone lets in
        out = c.post("/logout", data={"csrf_token": csrf_of(c, "/")}, headers={"origin": base})
        assert out.status_code == 303
        c.cookies.delete("chute_session")
        assert c.get("/dlq").status_code == 303


def test_login_never_redirects_off_site(base: str) -> None:
    with client(base) as c:
        token = csrf_of(c)
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            r = c.post("/login", data={"token": TOKEN, "csrf_token": token, "next": target}, headers={"origin": base})
            assert r.headers["location"] == "/", target


def test_every_post_refuses_a_missing_or_foreign_csrf_token_or_a_cross_site_origin(base: str, seeded: Seeded) -> None:
    posts = [(m, p) for m, p in crawl(seeded) if m == "POST"]
    assert {p for _, p in posts} >= {"/dlq/replay", "/dlq/purge", "/api/dlq/replay", "/api/dlq/purge", "/login",
                                     "/logout", f"/tasks/{seeded.charge}/cancel", f"/api/tasks/{seeded.charge}/cancel"}
    with client(base, headers=auth()) as mine, client(base, headers=auth()) as theirs:
        my_token, their_token = csrf_of(mine, "/"), csrf_of(theirs, "/")
        for _, path in posts:
            json_api = path.startswith("/api/")

            def send(token: str | None, origin: str | None, path: str = path, json_api: bool = json_api) -> int:
                headers = {"origin": origin} if origin else {}
                if json_api:
                    if token:
                        headers["x-csrf-token"] = token
                    return mine.post(path, json={"ids": ["no-such-id"]}, headers=headers).status_code
                data = {"ids": "no-such-id", **({"csrf_token": token} if token else {})}
                return mine.post(path, data=data, headers=headers).status_code

            assert send(None, base) == 403, path
            assert send(their_token, base) == 403, path  # a token made for another browser's cookie
            assert send(my_token, EVIL) == 403, path
            assert send(my_token, "null") == 403, path
            assert send(my_token, base) in (200, 303, 401), path  # accepted (login answers 401: no credentials)
    assert all(getattr(r, "endpoint", None) is None or "POST" not in (getattr(r, "methods", None) or ())
               or getattr(r.endpoint, "protected", False) for r in routes())


def dump(db: str) -> str:
    conn = sqlite3.connect(db)
    try:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    finally:
        conn.close()


def test_no_get_changes_the_database(base: str, seeded: Seeded) -> None:
    before = dump(str(seeded.db))
    with client(base, headers=auth()) as c:
        for method, path in crawl(seeded):
            if method == "GET":
                c.get(path + ("?count=1" if path == "/api/stream" else ""))
        c.get("/dlq/replay")  # a GET to an action's path is not the action
        c.get(f"/tasks/{seeded.charge}/cancel")
    assert dump(str(seeded.db)) == before


def test_cookies_are_secure_under_https(base: str) -> None:
    with client(base, headers={**auth(), "x-forwarded-proto": "https"}) as c:
        r = c.get("/")
    (csrf,) = [h for h in r.headers.get_list("set-cookie") if h.startswith("chute_csrf=")]
    assert "Secure" in csrf and "HttpOnly" in csrf and "SameSite=Strict" in csrf
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"


def test_basic_auth_from_the_environment(seeded: Seeded) -> None:
    env = seeded.env(CHUTE_DASHBOARD_USER="ops", CHUTE_DASHBOARD_PASSWORD="correct horse")
    with dashboard(env) as url, client(url) as c:
        assert c.get("/api/overview").status_code == 401
        assert c.get("/api/overview", auth=("ops", "wrong")).status_code == 401
        assert c.get("/api/overview", auth=("ops", "correct horse")).status_code == 200


def test_without_credentials_only_loopback_names_are_answered(seeded: Seeded) -> None:
    with dashboard(seeded.env()) as url, client(url) as c:
        assert c.get("/").status_code == 200
        rebound = c.get("/", headers={"host": "attacker.example"})  # DNS rebinding to 127.0.0.1
        assert rebound.status_code == 403 and "CHUTE_DASHBOARD_TOKEN" in rebound.text


def test_the_command_refuses_a_public_address_without_credentials(seeded: Seeded) -> None:
    out = subprocess.run([sys.executable, "-m", "chute", "dashboard", "apps.ops:app", "--host", "0.0.0.0"],
                         env=seeded.env(), cwd=str(TESTS), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "refusing to serve the dashboard on 0.0.0.0 without authentication" in out.stderr
    short = subprocess.run([sys.executable, "-m", "chute", "dashboard", "apps.ops:app"], cwd=str(TESTS),
                           env=seeded.env(CHUTE_DASHBOARD_TOKEN="short"), capture_output=True, text=True, timeout=60)
    assert short.returncode == 2 and "at least 16 characters" in short.stderr
