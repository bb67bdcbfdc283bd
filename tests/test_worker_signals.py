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


LATE_TASKS = """
import redis

from qtui.core import App, signals

app = App("latetasks", broker={broker!r}, backend={broker!r}, task_default_queue={queue!r})
records = redis.Redis.from_url({broker!r})


def record(*words):
    records.rpush({key!r}, " ".join(str(w) for w in words))


def received(sender, request, **_):
    record("task_received", request.id)


def prerun(sender, task_id, **_):
    record("task_prerun", task_id)


def success(sender, result, **_):
    record("task_success", result)


def postrun(sender, task_id, state, **_):
    record("task_postrun", task_id, state)


@app.task
def connect():
    signals.task_received.connect(received)
    signals.task_prerun.connect(prerun)
    signals.task_success.connect(success)
    signals.task_postrun.connect(postrun)


@app.task
def add(x, y):
    return x + y
"""


@pytest.mark.timeout(90)
def test_receivers_connected_while_the_worker_runs_get_the_signals(tmp_path, redis_url):
    """A signal without receivers returns at once; one connected later, from a task of the
    running worker, gets every signal from then on."""
    queue = f"sig-{uuid.uuid4().hex[:10]}"
    key = f"{queue}:records"
    write_module(tmp_path, "latetasks", LATE_TASKS.format(broker=redis_url, queue=queue,
                                                          key=key))
    hostname = f"sig-{uuid.uuid4().hex[:6]}@test"
    argv = [sys.executable, "-m", "qtui.tui.cli", "-A", "latetasks", "run-worker", "-P",
            "threads", "-c", "1", "-n", hostname]  # one thread: the first task ends before
    client = redis.Redis.from_url(redis_url)
    app = App("client", broker=redis_url, backend=redis_url, task_default_queue=queue)
    try:
        with running(argv, tmp_path, ready=f"qtui worker {hostname} ready."):
            before = app.send_task("latetasks.add", args=[1, 1])
            assert before.get(timeout=20) == 2
            app.send_task("latetasks.connect").get(timeout=20)
            after = app.send_task("latetasks.add", args=[2, 3])
            assert after.get(timeout=20) == 5
            records = wait_for_records(client, key, f"task_postrun {after.id}")
    finally:
        client.delete(key)
        app.close()
    assert not any(before.id in r for r in records), records
    assert [r for r in records if after.id in r or r == "task_success 5"] == [
        f"task_received {after.id}", f"task_prerun {after.id}", "task_success 5",
        f"task_postrun {after.id} SUCCESS"]
