"""Celery's ``argsrepr``, ``kwargsrepr`` and ``shadow`` send options between qtui and the real
``celery`` package: what a Celery worker shows of a task qtui sent with them (its events and
``inspect active``), and what a qtui worker's events carry of a task Celery sent with them."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import redis

from qtui.core import App
from qtui.core.events import EventReceiver

from .processes import celery_worker, write_module
from .worker_helpers import ModuleWorkers, module_workers  # noqa: F401 - fixture

pytest.importorskip("celery")

CELERY_TASKS = """
import time

from celery import Celery

app = Celery("ctasks", broker={broker!r}, backend={backend!r})
app.conf.task_default_queue = {queue!r}


@app.task(name="tasks.sleep")
def sleep(seconds, secret=None):
    time.sleep(seconds)
    return seconds
"""

CELERY_CLIENT = """
import sys
from celery import Celery

broker, backend, queue, task_id = sys.argv[1:5]
app = Celery("client", broker=broker, backend=backend)
app.conf.task_default_queue = queue
result = app.send_task("tasks.add", args=[2, 3], task_id=task_id, argsrepr="(***)",
                       kwargsrepr="{***}", shadow="masked.add")
print("add:", result.get(timeout=30))
"""


def received(receiver: EventReceiver, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """The task-received event of ``task_id``."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        for event in receiver.events(timeout=left, limit=1):
            if event.get("type") == "task-received" and event.get("uuid") == task_id:
                return event
    raise AssertionError(f"no task-received event for {task_id}")


@pytest.fixture
def celery_side(tmp_path, unique, redis_url) -> Iterator[App]:
    """A Celery worker (with task events) on a queue of its own, and a qtui client for it."""
    queue = f"qa-{unique}"
    write_module(tmp_path, "ctasks", CELERY_TASKS.format(broker=redis_url, backend=redis_url,
                                                         queue=queue))
    app = App("client", broker=redis_url, backend=redis_url, task_default_queue=queue)
    with ExitStack() as stack:
        stack.callback(redis.Redis.from_url(redis_url).delete, queue)
        stack.callback(app.close)
        # threads: a solo pool answers no inspect while its task runs
        stack.enter_context(celery_worker(tmp_path, "ctasks", queue, pool="threads",
                                          extra=["-E"]))
        yield app


@pytest.mark.timeout(120)
def test_a_celery_worker_shows_the_shadow_name_and_reprs_qtui_sent(celery_side):
    app = celery_side
    celery_host = f"celery-{app.conf.task_default_queue}@{socket.gethostname()}"
    with EventReceiver(app, wakeup=False) as receiver:
        result = app.send_task("tasks.sleep", (5,), {"secret": "hunter2"}, argsrepr="(***)",
                               kwargsrepr="{'secret': '***'}", shadow="masked.sleep")
        event = received(receiver, result.id)
        active: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while not active and time.monotonic() < deadline:
            # safe, as the console's worker detail asks: the reprs, not the arguments
            replies = app.control.inspect(timeout=1.0,
                                          destination=[celery_host]).active(safe=True) or {}
            active = [t for tasks in replies.values() for t in tasks if t["id"] == result.id]
        assert result.get(timeout=30) == 5
    assert (event["name"], event["args"], event["kwargs"]) == \
        ("masked.sleep", "(***)", "{'secret': '***'}")
    assert active and active[0]["name"] == "masked.sleep"
    assert (active[0]["args"], active[0]["kwargs"]) == ("(***)", "{'secret': '***'}")


@pytest.mark.timeout(120)
def test_a_qtui_workers_events_carry_the_reprs_celery_sent(module_workers: ModuleWorkers,
                                                           unique):
    setup, _ = module_workers.get("redis", "-P", "threads")
    write_module(setup.directory, "celery_client", CELERY_CLIENT)
    app = setup.app()
    task_id = f"argsrepr-{unique}"
    try:
        with EventReceiver(app, wakeup=False) as receiver:
            out = subprocess.run([sys.executable, "celery_client.py", setup.broker,
                                  str(setup.backend), setup.queue, task_id],
                                 cwd=setup.directory, capture_output=True, text=True,
                                 timeout=60, check=False)
            assert out.returncode == 0, out.stderr
            event = received(receiver, task_id)
    finally:
        app.close()
    assert "add: 5" in out.stdout
    assert (event["args"], event["kwargs"]) == ("(***)", "{***}")


@pytest.mark.timeout(120)
def test_inspect_of_a_celery_worker_in_safe_mode_and_with_celerys_calls(celery_side):
    """``active(safe=True)`` gives the reprs (Celery honours ``safe`` there), ``active()`` the
    arguments, as Celery's client; ``query_task`` takes ids or one list of them, as Celery's
    does (a Celery worker ignores ``safe`` there and sends the arguments: ``qtui inspect`` does
    not show them)."""
    app = celery_side
    celery_host = f"celery-{app.conf.task_default_queue}@{socket.gethostname()}"
    result = app.send_task("tasks.sleep", (5,), {"secret": "hunter2"}, argsrepr="(***)",
                           kwargsrepr="{'secret': '***'}")
    inspect = app.control.inspect(timeout=1.0, destination=[celery_host])
    active: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while not active and time.monotonic() < deadline:
        active = [t for t in (inspect.active(safe=True) or {}).get(celery_host, [])
                  if t["id"] == result.id]
    assert active and (active[0]["args"], active[0]["kwargs"]) == ("(***)", "{'secret': '***'}")
    (plain,) = [t for t in inspect.active()[celery_host] if t["id"] == result.id]
    assert (plain["args"], plain["kwargs"]) == ([5], {"secret": "hunter2"})
    for queried in (inspect.query_task(result.id), inspect.query_task([result.id])):
        state, info = queried[celery_host][result.id]
        assert state == "active" and info["id"] == result.id
    assert result.get(timeout=30) == 5
