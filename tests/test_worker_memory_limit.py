"""``--max-memory-per-child``: a prefork child that a task left above the limit (its peak
resident size, in KiB, as Celery measures it) is replaced; the task's result stands and the next
task runs in a new child. A child below the limit keeps running tasks."""

from __future__ import annotations

import sys
import uuid

import pytest

from qtui.core import App

from .processes import running, write_module

TASKS = """
import os

from qtui.core import App

app = App("memtasks", broker={broker!r}, backend={broker!r}, task_default_queue={queue!r})
kept = []


@app.task
def pid():
    return os.getpid()


@app.task
def hog(megabytes):
    kept.append(b"x" * (megabytes * 1024 * 1024))  # written, so resident
    return os.getpid()
"""


@pytest.mark.timeout(90)
def test_a_child_left_above_max_memory_is_replaced(tmp_path, redis_url):
    queue = f"mem-{uuid.uuid4().hex[:10]}"
    write_module(tmp_path, "memtasks", TASKS.format(broker=redis_url, queue=queue))
    hostname = f"mem-{uuid.uuid4().hex[:6]}@test"
    argv = [sys.executable, "-m", "qtui.tui.cli", "-A", "memtasks", "run-worker", "-P",
            "prefork", "-c", "1", "-n", hostname, "--max-memory-per-child", "200000"]
    app = App("client", broker=redis_url, backend=redis_url, task_default_queue=queue)
    try:
        with running(argv, tmp_path, ready=f"qtui worker {hostname} ready."):
            first = app.send_task("memtasks.pid").get(timeout=30)
            assert app.send_task("memtasks.pid").get(timeout=30) == first  # below: kept
            assert app.send_task("memtasks.hog", args=[300]).get(timeout=60) == first
            assert app.send_task("memtasks.pid").get(timeout=30) != first
    finally:
        app.close()
