"""``--autoscale MAX,MIN``: the pool grows while tasks wait for a slot (three tasks that each
wait for the other two can only finish together), and the ``autoscale`` control command changes
the bounds of such a worker."""

from __future__ import annotations

import sys
import uuid

import pytest
import redis

from qtui.core import App
from qtui.core.exceptions import ConfigError
from qtui.workers.autoscale import parse

from .processes import running, write_module

TASKS = """
import time

import redis

from qtui.core import App

app = App("scaletasks", broker={broker!r}, backend={broker!r}, task_default_queue={queue!r})
records = redis.Redis.from_url({broker!r})


@app.task
def together(key, count):
    '''Wait (up to 20 s) until ``count`` of these run at once; True if they did.'''
    records.incr(key)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if int(records.get(key)) >= count:
            return True
        time.sleep(0.05)
    return False
"""


@pytest.mark.timeout(90)
def test_the_pool_grows_to_run_waiting_tasks_and_autoscale_sets_its_bounds(tmp_path, redis_url):
    queue = f"scale-{uuid.uuid4().hex[:10]}"
    write_module(tmp_path, "scaletasks", TASKS.format(broker=redis_url, queue=queue))
    hostname = f"scale-{uuid.uuid4().hex[:6]}@test"
    argv = [sys.executable, "-m", "qtui.tui.cli", "-A", "scaletasks", "run-worker", "-P",
            "threads", "-n", hostname, "--autoscale", "4,1"]
    app = App("client", broker=redis_url, backend=redis_url, task_default_queue=queue)
    key = f"{queue}:together"
    try:
        with running(argv, tmp_path, ready=f"qtui worker {hostname} ready."):
            results = [app.send_task("scaletasks.together", args=[key, 3]) for _ in range(3)]
            assert [r.get(timeout=40) for r in results] == [True, True, True]
            replies = app.control.autoscale(6, 2, destination=[hostname], reply=True,
                                            timeout=5)
            assert replies == [{hostname: {"ok": "autoscale now max=6 min=2"}}]
    finally:
        redis.Redis.from_url(redis_url).delete(key)
        app.close()


def test_autoscale_reads_max_and_min_as_celery_does():
    assert parse("10,3") == (10, 3)
    assert parse("3,10") == (10, 3)
    assert parse("5") == (5, 0)
    with pytest.raises(ConfigError, match="MAX,MIN"):
        parse("ten")
