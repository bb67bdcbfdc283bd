"""A prefork child killed past its task's code (SIGKILL terminate, the hard time limit, a death
of its own) at any point of its result write and canvas follow-up: the task's outcome is
stored once with its own state, its chord part counted once, its links, chain and errbacks
sent at most once and only for that outcome. Each window is held open by a hook in the child
that records it got there and then blocks until the test (or the hard time limit) kills the
child."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from qtui.core import App, states
from qtui.core.canvas import chord, signature

from .processes import write_module
from .worker_helpers import TASKS, Setup, redis_setup  # noqa: F401 - fixtures

#: Hooks that hold a pool child (never the worker, which loads the module too) at a point past
#: its task's code: counting the chord part of ``mark("held")``, and right after sending the
#: link of ``mark("held-link")``; and a task whose process dies once after its follow-up.
HELD = """
import multiprocessing

from qtui.workers import canvas

_count = type(app.backend).on_chord_part_return
_send = canvas._send


def _in_child():
    return multiprocessing.current_process().name.startswith("ForkPoolWorker")


def _held_count(self, message, state, result, send=None):
    if list(message.args) == ["held"] and _in_child():
        record("counting", id=message.id, state=state)
        time.sleep(600)
    return _count(self, message, state, result, send=send)


def _held_send(app, value, args, **options):
    _send(app, value, args, **options)
    if args == ("held-link",) and _in_child():
        record("sent", id=options.get("parent_id"))
        time.sleep(600)


class _DiesAfterReturn(Task):
    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        # Its result is stored and its canvas followed: its process dies (once).
        if _redis.incr(f"{KEY}:dies:{task_id}") == 1:
            os.kill(os.getpid(), signal.SIGKILL)


@app.task(base=_DiesAfterReturn)
def dies_after_return(tag):
    record("ran", tag=tag)
    return tag


type(app.backend).on_chord_part_return = _held_count
canvas._send = _held_send
"""


#: A Celery app (run by Celery's own tracer in qtui's prefork child) whose task lingers in
#: ``after_return``, after the tracer stored its result.
CELERY_TASKS = """
import json
import os
import time

import redis
from celery import Celery, Task

app = Celery("ctasks", broker=os.environ["QTUI_TEST_BROKER"],
             backend=os.environ["QTUI_TEST_BACKEND"])
app.conf.task_default_queue = os.environ["QTUI_TEST_QUEUE"]
KEY = os.environ["QTUI_TEST_QUEUE"]
_redis = redis.Redis.from_url(os.environ["QTUI_TEST_RECORDS"])


def record(kind, **data):
    _redis.rpush(f"{KEY}:{kind}", json.dumps({"t": time.time(), **data}))


class _LingersAfterReturn(Task):
    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        record("stored", status=status)
        time.sleep(args[0])


@app.task(base=_LingersAfterReturn, name="tasks.lingering")
def lingering(seconds, tag=None):
    return tag


@app.task(name="tasks.add")
def add(x, y):
    return x + y


@app.task(name="tasks.mark")
def mark(tag):
    record("mark", tag=tag)
    return tag
"""


@pytest.fixture
def setup(redis_setup: Setup) -> Iterator[Setup]:
    write_module(redis_setup.directory, "tasks", TASKS + HELD)
    yield redis_setup


@pytest.mark.timeout(90)
def test_a_chord_part_killed_between_its_stored_success_and_its_count_is_counted_by_the_worker(
        setup: Setup):
    """SIGKILL lands while a chord part that stored SUCCESS counts itself: the worker counts
    it, with its stored result, and the chord's body runs with every part. Before, the stored
    SUCCESS stood uncounted and the body never ran."""
    with setup.worker("-P", "prefork", "-c", "2") as worker:
        app = setup.app()
        parts = [signature("tasks.mark", "held", app=app), signature("tasks.mark", "fast", app=app)]
        body = chord(parts, signature("tasks.mark", app=app)).apply_async()
        part_id = setup.wait_records("counting", 1)[0]["id"]
        assert app.AsyncResult(part_id).state == states.SUCCESS
        app.control.revoke(part_id, terminate=True, signal="SIGKILL")
        assert sorted(body.get(timeout=30)) == ["fast", "held"], \
            worker.log_path.read_text()[-3000:]
        assert app.AsyncResult(part_id).get(timeout=5) == "held"
        assert "that outcome stands; what follows it is done here" in worker.log_path.read_text()
        app.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("tasks", ["tasks", "ctasks"])
def test_a_task_killed_at_its_hard_time_limit_after_its_follow_up_keeps_its_success(
        setup: Setup, tasks: str):
    """The hard time limit lands in ``after_return``, once the task's SUCCESS is stored and
    its canvas followed (by qtui, or by Celery's tracer for a Celery app's task): the SUCCESS
    stands and no errback runs, as on Celery (whose Redis backend never overwrites a SUCCESS).
    Before, FAILURE (TimeLimitExceeded) was stored over it and its errbacks were sent."""
    write_module(setup.directory, "ctasks", CELERY_TASKS)
    with setup.worker("-P", "prefork", "-c", "1", tasks=tasks) as worker:
        app = setup.app()
        result = app.send_task("tasks.lingering", args=[600, "finished"], time_limit=2,
                               link_error=signature("tasks.mark", app=app))  # mark(task id)
        assert setup.wait_records("stored", 1) != []
        wait_for_lost(worker, app, result.id)
        assert app.send_task("tasks.mark", args=["probe"]).get(timeout=20) == "probe"
        assert (result.state, result.get(timeout=5)) == (states.SUCCESS, "finished"), \
            worker.log_path.read_text()[-3000:]
        assert [r["tag"] for r in setup.records("mark")] == ["probe"]
        app.close()


@pytest.mark.timeout(90)
def test_a_task_killed_at_its_hard_time_limit_while_sending_its_link_runs_no_errback(
        setup: Setup):
    """The hard time limit lands once a success's link was sent and before its result was
    stored: the link runs (``mark`` of the task's result), no errback does (the task
    succeeded), and the lost result is stored as the kill. Before, an errback ran for a task
    whose link ran too. (One child: the tasks run in the order they were sent, the probe
    last.)"""
    with setup.worker("-P", "prefork", "-c", "1") as worker:
        app = setup.app()
        result = app.send_task("tasks.mark", args=["held-link"], time_limit=2,
                               link=signature("tasks.mark", app=app),
                               link_error=signature("tasks.mark", app=app))  # mark(task id)
        assert setup.wait_records("sent", 1) != []
        wait_for_lost(worker, app, result.id)
        assert app.send_task("tasks.mark", args=["probe"]).get(timeout=20) == "probe"
        assert result.state == states.FAILURE, worker.log_path.read_text()[-3000:]
        assert sorted(r["tag"] for r in setup.records("mark")) == ["held-link", "held-link",
                                                                   "probe"]
        app.close()


@pytest.mark.timeout(90)
def test_a_task_whose_process_dies_after_its_follow_up_is_not_delivered_again(setup: Setup):
    """The child dies by itself (no signal from the worker) once its task's SUCCESS is stored
    and its canvas followed: the SUCCESS stands and the task does not run again. Before, the
    worker delivered it again (``task_reject_on_worker_lost``) and it ran twice."""
    with setup.worker("-P", "prefork", "-c", "1") as worker:
        app = setup.app()
        result = app.send_task("tasks.dies_after_return", args=["once"])
        wait_for_lost(worker, app, result.id)
        assert (result.state, result.get(timeout=5)) == (states.SUCCESS, "once"), \
            worker.log_path.read_text()[-3000:]
        assert app.send_task("tasks.add", args=[1, 1]).get(timeout=20) == 2
        assert [r["tag"] for r in setup.records("ran")] == ["once"]
        app.close()


def wait_for_lost(worker: Any, app: App, task_id: str, timeout: float = 30) -> None:
    """Wait until the worker has taken in the end of the child that ran ``task_id``: it logs
    that first, and runs a task sent after the line only once it has done the rest (its main
    thread does one thing at a time). What it sent meanwhile runs before a task sent after
    this returns (one child)."""
    deadline = time.monotonic() + timeout
    lines = (f"[{task_id}] ended", f"[{task_id}]: hard time limit", f"[{task_id}] succeeded and",
             f"[{task_id}]: the process running it")
    while not any(line in worker.log_path.read_text() for line in lines):
        assert time.monotonic() < deadline, worker.log_path.read_text()[-3000:]
        time.sleep(0.05)
    assert app.send_task("tasks.add", args=[2, 2]).get(timeout=20) == 4
