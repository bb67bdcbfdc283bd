"""A qtui app's worker sends ``qtui.core.signals`` at its own points, with Celery's arguments:
worker_init and worker_ready at start, task_received, task_revoked (expired), task_unknown, and
worker_shutdown at the end. Receivers in the app module write to Redis for the test to read."""

from __future__ import annotations

import sys
import time
import uuid

import pytest
import redis

from qtui.core import App

from .processes import running, write_module

TASKS = """
import redis

from qtui.core import App, signals

app = App("sigtasks", broker={broker!r}, backend={broker!r}, task_default_queue={queue!r})
records = redis.Redis.from_url({broker!r})


def record(*words):
    records.rpush({key!r}, " ".join(str(w) for w in words))


@signals.worker_init.connect
def init(sender, **_):
    record("worker_init", sender.hostname)


@signals.worker_ready.connect
def ready(sender, **_):
    record("worker_ready")


@signals.worker_shutdown.connect
def shutdown(sender, **_):
    record("worker_shutdown")


@signals.task_received.connect
def received(sender, request, **_):
    record("task_received", request.id, request.task)


@signals.task_revoked.connect
def revoked(sender, request, expired, terminated, **_):
    record("task_revoked", request.id, sender.name, expired, terminated)


@signals.task_unknown.connect
def unknown(sender, name, id, **_):
    record("task_unknown", id, name)


@app.task
def add(x, y):
    return x + y
"""


def wait_for_records(client: redis.Redis, key: str, word: str, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r.decode() for r in client.lrange(key, 0, -1)]
        if any(r.startswith(word) for r in found):
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {word} record within {timeout}s")


@pytest.mark.timeout(90)
def test_a_qtui_worker_sends_the_worker_and_task_signals(tmp_path, redis_url):
    queue = f"sig-{uuid.uuid4().hex[:10]}"
    key = f"{queue}:records"
    write_module(tmp_path, "sigtasks", TASKS.format(broker=redis_url, queue=queue, key=key))
    hostname = f"sig-{uuid.uuid4().hex[:6]}@test"
    argv = [sys.executable, "-m", "qtui.tui.cli", "-A", "sigtasks", "run-worker", "-P", "solo",
            "-n", hostname]
    client = redis.Redis.from_url(redis_url)
    app = App("client", broker=redis_url, backend=redis_url, task_default_queue=queue)
    try:
        with running(argv, tmp_path, ready=f"qtui worker {hostname} ready."):
            assert wait_for_records(client, key, "worker_ready")[:2] == [
                f"worker_init {hostname}", "worker_ready"]
            done = app.send_task("sigtasks.add", args=[1, 2])
            assert done.get(timeout=20) == 3
            expired = app.send_task("sigtasks.add", args=[1, 2], countdown=1, expires=0.5)
            unknown = app.send_task("sigtasks.nothing")
            wait_for_records(client, key, "task_revoked")
            records = wait_for_records(client, key, "task_unknown")
            assert f"task_received {done.id} sigtasks.add" in records
            assert f"task_revoked {expired.id} sigtasks.add True False" in records
            assert f"task_unknown {unknown.id} sigtasks.nothing" in records
        assert wait_for_records(client, key, "worker_shutdown")
    finally:
        client.delete(key)
        app.close()
