"""Send work and wait for it, as a web view would: `python client.py` with a worker running."""

from __future__ import annotations

from tasks import app, flaky, send_report


def main() -> None:
    handles = app.send_many([send_report.s(user) for user in range(1, 6)])
    print("queued", [h.id for h in handles])
    for h in handles:
        print(h.id, "->", h.get(timeout=30))
    failing = flaky.delay(7)
    try:
        failing.get(timeout=30)
    except ConnectionError as exc:
        print(failing.id, "->", failing.status, f"({exc})")


if __name__ == "__main__":
    main()
