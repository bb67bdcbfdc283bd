"""A Celery app's task declared ``ignore_result=True`` run by qtui's worker (Celery's tracer,
``workers/celery_trace.py``) stores no result when its message's ``ignore_result`` is null, as
Celery's own worker (``celery/worker/request.py``: a null header falls back on the task's
setting); an explicit false still makes it store, as there. Sent by qtui's and Celery's
``send_task`` (both send null when not given), on the prefork, threads and solo pools."""

from __future__ import annotations

import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from qtui.core import App

from .processes import running, write_module
from .services import REDIS_HOST, REDIS_PORT, need
from .worker_helpers import wait_for

REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"

MODULE = """\
import redis
from celery import Celery
from celery.signals import task_postrun

app = Celery("cig", broker={url!r}, backend={url!r})
app.conf.task_default_queue = {queue!r}
_redis = redis.Redis.from_url({url!r})


@app.task(name="tasks.ignoring", ignore_result=True)
def ignoring():
    return "not stored"


@task_postrun.connect
def done(task_id=None, **_):
    # after Celery's tracer has stored the outcome, or not
    _redis.rpush({key!r}, task_id)
"""


@pytest.fixture
def celery_module(tmp_path: Path) -> Iterator[tuple[Path, Any, str]]:
    need("Redis", REDIS_HOST, REDIS_PORT)
    token = uuid.uuid4().hex[:10]
    name, key = f"cig_{token}", f"cig-done-{token}"
    write_module(tmp_path, name, MODULE.format(url=REDIS_URL, queue=f"cig-{token}", key=key))
    sys.path.insert(0, str(tmp_path))
    try:
        module = __import__(name)
        yield tmp_path, module, key
        module.app.close()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)
        redis.Redis.from_url(REDIS_URL).delete(key)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_a_null_ignore_result_goes_by_the_celery_tasks_own(
        celery_module: tuple[Path, Any, str], pool: str) -> None:
    directory, module, key = celery_module
    client = App("cig-client", broker=REDIS_URL, backend=REDIS_URL,
                 task_default_queue=module.app.conf.task_default_queue)
    store = redis.Redis.from_url(REDIS_URL)
    sent = {"qtui null": client.send_task("tasks.ignoring").id,
            "celery null": module.app.send_task("tasks.ignoring").id,
            "qtui false": client.send_task("tasks.ignoring", ignore_result=False).id,
            "celery false": module.app.send_task("tasks.ignoring", ignore_result=False).id}
    client.close()
    hostname = f"cig-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    argv = [sys.executable, "-m", "qtui.tui.cli", "-A", module.__name__, "run-worker",
            "-P", pool, "-c", "2", "-n", hostname, "-Q", module.app.conf.task_default_queue]
    try:
        with running(argv, directory, ready=f"qtui worker {hostname} ready.", timeout=60):
            assert wait_for(lambda: store.llen(key) >= len(sent), timeout=60)
        stored = {how: store.exists(f"celery-task-meta-{task_id}") == 1
                  for how, task_id in sent.items()}
        # Before, qtui's decoding made each null an explicit false: all four were stored.
        assert stored == {"qtui null": False, "celery null": False,
                          "qtui false": True, "celery false": True}
    finally:
        store.delete(*(f"celery-task-meta-{task_id}" for task_id in sent.values()))
