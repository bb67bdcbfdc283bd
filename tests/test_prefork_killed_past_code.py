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
import redis

from qtui.core import App, states
from qtui.core.canvas import chain, chord, signature

from .processes import write_module
from .worker_helpers import REDIS_URL, TASKS, Setup, redis_setup, sqlite_setup  # noqa: F401

#: Hooks that hold a pool child (never the worker, which loads the module too) at a point past
#: its task's code: counting the chord part of ``mark("held")``, storing the result of
#: ``mark("held-link")`` (its link sent), before sending the next chain step of
#: ``mark("held-at-step")`` (or dying there, once, for ``mark("dies-at-step")``); and tasks
#: whose process dies once after their follow-up (given back once, or failed with a
#: CanvasError).
HELD = """
import multiprocessing

from qtui.core.backends import redis_chord, sqlite_chord
from qtui.core.exceptions import CanvasError
from qtui.workers import canvas

_count = type(app.backend).on_chord_part_return
_store = type(app.backend).store_result
_send = canvas._send


def _in_child():
    return multiprocessing.current_process().name.startswith("ForkPoolWorker")


def _held_count(self, message, state, result, send=None, retake=False):
    if list(message.args) == ["held"] and _in_child():
        record("counting", id=message.id, state=state)
        time.sleep(600)
    return _count(self, message, state, result, send=send, retake=retake)


def _held_send(app, value, args, **options):
    parent = options.get("parent_id")
    if _in_child() and "chain" in options and args[:1] in (("dies-at-step",), ("held-at-step",)):
        # About to send a success's next chain step (its links sent): held, or dies (once).
        record("sending", id=parent)
        if args == ("held-at-step",):
            time.sleep(600)
        if _redis.incr(f"{KEY}:dies-sending:{parent}") == 1:
            os.kill(os.getpid(), signal.SIGKILL)
    if parent in _give_back:
        _give_back.discard(parent)
        raise canvas.Unsent("the broker refused it to the end of the shutdown grace (simulated)")
    if parent in _cannot_follow:
        raise CanvasError("cannot follow (simulated)")
    _send(app, value, args, **options)


def _held_store(self, task_id, result, state, traceback=None, request=None, **extra):
    if request is not None and list(request.args) == ["held-link"] and request.callbacks \
            and _in_child():
        record("sent", id=task_id)  # its link sent, its result not stored yet
        time.sleep(600)
    if request is not None and list(request.args) == ["dies-after-link"] and request.callbacks \
            and _in_child() and _redis.incr(f"{KEY}:dies-store:{task_id}") == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # its link sent, its result not stored yet
    return _store(self, task_id, result, state, traceback, request, **extra)


class _DiesAfterReturn(Task):
    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        # Its result is stored and its canvas followed: its process dies (once).
        if _redis.incr(f"{KEY}:dies:{task_id}") == 1:
            os.kill(os.getpid(), signal.SIGKILL)


@app.task(base=_DiesAfterReturn)
def dies_after_return(tag):
    record("ran", tag=tag)
    return tag


_give_back = set()  # tasks whose first send after they ended is given back (canvas.Unsent)
_cannot_follow = set()  # tasks whose sends after they ended fail (CanvasError)


@app.task(base=_DiesAfterReturn, bind=True)
def gives_back_once(self, tag, fail=False):
    # What follows its first run is given back (it runs again), then its process dies.
    record("ran", tag=tag)
    if _redis.incr(f"{KEY}:gives-back:{self.request.id}") == 1:
        _give_back.add(self.request.id)
    if fail:
        raise ValueError(tag)
    return tag


@app.task(base=_DiesAfterReturn, bind=True)
def cannot_follow(self, tag):
    # Its link cannot be sent (CanvasError: dead-lettered), then its process dies.
    record("ran", tag=tag)
    _cannot_follow.add(self.request.id)
    return tag


def _holding_body(send_body):
    def held(backend, message, results, send=None):
        # The part that claimed the chord, before its body goes (when the test asks).
        if _in_child() and _redis.get(f"{KEY}:hold-body"):
            record("claimed", id=message.id)
            time.sleep(600)
        return send_body(backend, message, results, send)
    return held


redis_chord.send_body = _holding_body(redis_chord.send_body)
sqlite_chord.send_body = _holding_body(sqlite_chord.send_body)
type(app.backend).on_chord_part_return = _held_count
type(app.backend).store_result = _held_store
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
@pytest.mark.parametrize("backend", ["redis_setup", "sqlite_setup"])
def test_a_chord_part_killed_after_it_claimed_the_chord_has_its_body_sent_by_the_worker(
        request: pytest.FixtureRequest, backend: str):
    """SIGKILL lands on the part that completed a chord and claimed it, before its body is
    sent: the worker, ending that part, takes its claim back and sends the body. Before, the
    claim was the dead child's (Redis: a random token; SQLite: claimed and the parts deleted
    in one transaction): nobody sent the body, the chord's result stayed PENDING for ever."""
    setup: Setup = request.getfixturevalue(backend)
    write_module(setup.directory, "tasks", TASKS + HELD)
    with setup.worker("-P", "prefork", "-c", "2") as worker:
        app = setup.app()
        redis.Redis.from_url(REDIS_URL).set(f"{setup.queue}:hold-body", 1)
        parts = [signature("tasks.mark", "a", app=app), signature("tasks.mark", "b", app=app)]
        body = chord(parts, signature("tasks.mark", app=app)).apply_async()
        part_id = setup.wait_records("claimed", 1)[0]["id"]
        app.control.revoke(part_id, terminate=True, signal="SIGKILL")
        assert sorted(body.get(timeout=30)) == ["a", "b"], worker.log_path.read_text()[-3000:]
        assert app.send_task("tasks.add", args=[2, 2]).get(timeout=20) == 4
        assert bodies_run(setup) == 1
        app.close()


def bodies_run(setup: Setup) -> int:
    """How many times a chord body (``mark`` of the header's list) ran."""
    return sum(isinstance(r["tag"], list) for r in setup.records("mark"))


@pytest.mark.timeout(90)
def test_a_chord_part_dying_after_its_link_went_runs_again_and_the_chord_completes(
        setup: Setup):
    """A chord part succeeded, its link went, and its process died (no signal from the
    worker) before its result was stored: it is delivered again, as on main
    (``task_reject_on_worker_lost``), and the chord's body runs once with every part (the link
    at least once). Before, the part was counted as FAILURE (WorkerLostError) and the chord
    failed though every part succeeded."""
    with setup.worker("-P", "prefork", "-c", "1") as worker:
        app = setup.app()
        first = signature("tasks.mark", "dies-after-link", app=app)
        first.link(signature("tasks.mark", app=app))
        body = chord([first, signature("tasks.mark", "b", app=app)],
                     signature("tasks.mark", app=app)).apply_async()
        assert sorted(body.get(timeout=30)) == ["b", "dies-after-link"], \
            worker.log_path.read_text()[-3000:]
        assert app.send_task("tasks.add", args=[2, 2]).get(timeout=20) == 4
        assert bodies_run(setup) == 1
        app.close()


@pytest.mark.timeout(90)
def test_a_chord_part_killed_at_its_hard_time_limit_after_its_link_went_ends_the_chord(
        setup: Setup):
    """The hard time limit lands once a chord part's link went, before its result is
    stored: not delivered again (as on main), its part counted once as the kill, so the chord
    fails and its body does not run."""
    with setup.worker("-P", "prefork", "-c", "1") as worker:
        app = setup.app()
        first = signature("tasks.mark", "held-link", app=app).set(time_limit=2)
        first.link(signature("tasks.mark", app=app))
        body = chord([first, signature("tasks.mark", "b", app=app)],
                     signature("tasks.mark", app=app)).apply_async()
        body.get(timeout=30, propagate=False)
        assert body.state == states.FAILURE, worker.log_path.read_text()[-3000:]
        assert app.send_task("tasks.add", args=[2, 2]).get(timeout=20) == 4
        assert bodies_run(setup) == 0
        assert sorted(r["tag"] for r in setup.records("mark")) == ["b", "held-link",
                                                                   "held-link"]
        app.close()


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


@pytest.mark.timeout(90)
def test_a_task_whose_process_dies_before_its_next_chain_step_is_sent_runs_again(setup: Setup):
    """The child dies by itself while a chain step's success sends the next step, before the
    broker took it (nothing sent yet): the step is delivered again, as if lost in its code,
    and the chain ends. Before, it was marked 'sending' before the first send: FAILURE was
    stored, the task acked and the chain's result stayed PENDING for ever."""
    with setup.worker("-P", "prefork", "-c", "1") as worker:
        app = setup.app()
        result = chain(signature("tasks.mark", "dies-at-step", app=app),
                       signature("tasks.mark", app=app)).apply_async()
        assert result.get(timeout=30) == "dies-at-step", worker.log_path.read_text()[-3000:]
        assert (result.parent.state, result.parent.get(timeout=5)) == \
            (states.SUCCESS, "dies-at-step")
        app.close()


@pytest.mark.timeout(90)
def test_a_task_killed_at_its_hard_time_limit_before_its_next_chain_step_fails_the_chain(
        setup: Setup):
    """The hard time limit lands while a chain step's success sends the next step, before the
    broker took it: the chain fails (its last result too) and the errback runs, as for a task
    killed in its code. Before, the chain's result stayed PENDING and no errback ran."""
    with setup.worker("-P", "prefork", "-c", "1") as worker:
        app = setup.app()
        result = chain(signature("tasks.mark", "held-at-step", app=app).set(time_limit=2),
                       signature("tasks.mark", app=app)).apply_async(
            link_error=signature("tasks.mark", app=app))  # mark(task id)
        first = result.parent
        assert setup.wait_records("sending", 1) != []
        wait_for_lost(worker, app, first.id)
        assert app.send_task("tasks.mark", args=["probe"]).get(timeout=20) == "probe"
        assert (first.state, result.state) == (states.FAILURE, states.FAILURE), \
            worker.log_path.read_text()[-3000:]
        assert first.id in [r["tag"] for r in setup.records("mark")]  # the errback
        app.close()


@pytest.mark.timeout(90)
def test_a_task_whose_process_dies_between_its_link_and_its_next_chain_step_runs_again(
        setup: Setup):
    """The child dies by itself once its success's link was sent and before its next chain
    step was: delivered again, as on main (``task_reject_on_worker_lost``), and the chain
    completes; its link ran at least once (twice here)."""
    with setup.worker("-P", "prefork", "-c", "1") as worker:
        app = setup.app()
        first = signature("tasks.mark", "dies-at-step", app=app)
        first.link(signature("tasks.mark", app=app))
        result = chain(first, signature("tasks.mark", app=app)).apply_async()
        assert result.get(timeout=30) == "dies-at-step", worker.log_path.read_text()[-3000:]
        assert result.parent.state == states.SUCCESS
        app.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fail", [False, True], ids=["link", "errback"])
def test_a_task_that_gave_back_its_follow_up_and_then_died_runs_again(setup: Setup, fail: bool):
    """A success's link (before its result is stored) or a failure's errback (after) is given
    back (the broker refused it to the end of the shutdown grace: REJECTED, the task runs
    again), then the child dies in ``after_return``: the task runs again and its link or
    errback goes then. Before, it was recorded lost (FAILURE over the success, acked), or
    settled as its stored FAILURE: the link or errback never went."""
    with setup.worker("-P", "prefork", "-c", "1") as worker:
        app = setup.app()
        result = app.send_task("tasks.gives_back_once", args=["x"], kwargs={"fail": fail},
                               link=signature("tasks.mark", app=app),
                               link_error=signature("tasks.mark", app=app))
        marked = setup.wait_records("mark", 1)
        assert [r["tag"] for r in marked] == [result.id if fail else "x"], \
            worker.log_path.read_text()[-3000:]
        assert result.state == (states.FAILURE if fail else states.SUCCESS)
        assert [r["tag"] for r in setup.records("ran")] == ["x", "x"]
        app.close()


@pytest.mark.timeout(90)
def test_a_task_dead_lettered_by_its_process_stays_dead_lettered_when_it_dies(setup: Setup):
    """A success whose link cannot be sent is stored as a CanvasError and dead-lettered by the
    child, which then dies in ``after_return``: the worker dead-letters it too. Before, it was
    settled as an ordinary failure and not dead-lettered."""
    with setup.worker("-P", "prefork", "-c", "1") as worker:
        app = setup.app()
        result = app.send_task("tasks.cannot_follow", args=["x"],
                               link=signature("tasks.mark", app=app))
        wait_for_lost(worker, app, result.id)
        assert result.state == states.FAILURE, worker.log_path.read_text()[-3000:]
        assert [m.headers["id"] for m in setup.dead_letters()] == [result.id]
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
