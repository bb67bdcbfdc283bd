"""The tasks ``qtui demo`` runs: something of every kind a console should show.

Fast and slow tasks, one that fails, one that fails twice before it succeeds (retries), one
that is rate limited, and the producer that keeps sending them (some with a countdown, so the
scheduled ones show too). The app uses whatever broker the config gives, the embedded one by
default; the demo keeps to its own queue, ``demo``.
"""

from __future__ import annotations

import random
import threading
import time

from qtui.core import App, Task

QUEUE = "demo"

app = App("demo")
app.conf.update(task_default_queue=QUEUE, source="qtui demo")


@app.task(name="demo.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="demo.resize_image")
def resize_image(path: str, width: int, height: int) -> dict[str, object]:
    time.sleep(random.uniform(0.5, 3.0))
    return {"path": path, "size": [width, height]}


@app.task(name="demo.charge_card")
def charge_card(order: int, amount: float) -> str:
    if order % 7 == 0:
        raise ValueError(f"card declined for order {order}")
    return f"charged {amount:.2f} for order {order}"


@app.task(name="demo.fetch_feed", bind=True, max_retries=3, default_retry_delay=1)
def fetch_feed(self: Task, url: str) -> int:
    if self.request.retries < 2:
        raise self.retry(exc=ConnectionError(f"{url} timed out"))
    return len(url)


@app.task(name="demo.send_email", rate_limit="2/s")
def send_email(to: str, subject: str) -> str:
    time.sleep(0.05)
    return f"sent {subject!r} to {to}"


def produce(stop: threading.Event, interval: float = 0.4) -> None:
    """Send a mix of demo tasks every ``interval`` seconds until ``stop`` is set."""
    n = 0
    while not stop.is_set():
        n += 1
        try:
            add.delay(n, n * 2)
            if n % 2 == 0:
                resize_image.delay(f"/photos/{n:05d}.jpg", 640, 480)
            if n % 3 == 0:
                charge_card.delay(n, round(random.uniform(5, 500), 2))
            if n % 5 == 0:
                fetch_feed.delay(f"https://example.com/feed/{n}")
            if n % 4 == 0:
                send_email.delay(f"user{n}@example.com", "Your receipt")
            if n % 10 == 0:
                add.apply_async((n, 1), countdown=15)
        except Exception:  # the broker went away: try again on the next round
            pass
        stop.wait(interval)
