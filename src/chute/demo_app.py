"""The tasks `chute demo` runs; its URL comes from CHUTE_URL, which the demo sets."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import chute

app = chute.App(name="demo")


@app.task
def make_thumbnail(image_id: int) -> dict[str, object]:
    """A little real work per task: 5 ms of 'I/O', then hash the 'image' and name its thumbnail."""
    time.sleep(0.005)
    digest = hashlib.sha256(f"image-{image_id}".encode()).hexdigest()
    return {"image": image_id, "thumbnail": f"thumbs/{digest[:12]}.jpg"}


@app.task(retries=2, retry_backoff=0.4)
def charge_card(order_id: int, amount: float) -> str:
    """Fails while the 'payment gateway' is down (no gateway-up file in the demo folder)."""
    if not (Path(os.environ.get("CHUTE_DEMO_DIR", ".")) / "gateway-up").exists():
        raise ConnectionError(f"payment gateway unreachable while charging order {order_id}")
    return f"charged order {order_id}: {amount:.2f} EUR"
