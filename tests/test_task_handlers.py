"""qtui's own App offers Celery's surface: a task's handlers (before_start, on_success,
on_failure, on_retry, after_return), ``qtui.core.signals`` with Celery's names and arguments, and
``shared_task``. One run happens here (:func:`qtui.workers.execution.execute`); results go to
the real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from qtui.core import App, Task, shared_task, signals, states
from qtui.core import app as app_module
from qtui.core.protocol import TaskMessage
from qtui.core.task import new_task_id
from qtui.workers.execution import WorkItem, execute


class Recorded(Task):
    seen: ClassVar[list[tuple[Any, ...]]] = []

    def before_start(self, task_id, args, kwargs):
        self.seen.append(("before_start", task_id, args))

    def on_success(self, retval, task_id, args, kwargs):
        self.seen.append(("on_success", task_id, retval))

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        self.seen.append(("on_failure", task_id, type(exc).__name__, "boom" in str(einfo)))

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        self.seen.append(("on_retry", task_id, type(exc).__name__))

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        self.seen.append(("after_return", task_id, status))


@pytest.fixture
def app(redis_url: str) -> Iterator[App]:
    app = App("handlers", broker="memory://", backend=redis_url)
    Recorded.seen = []
    yield app
    app.close()


@pytest.fixture
def received() -> Iterator[list[tuple[Any, ...]]]:
    """What the task signals said, in order."""
    seen: list[tuple[Any, ...]] = []
    receivers = {
        signals.task_prerun: lambda sender, task_id, task, args, kwargs, **_: seen.append(
            ("task_prerun", task_id, task.name, args)),
        signals.task_success: lambda sender, result, **_: seen.append(
            ("task_success", sender.name, result)),
        signals.task_failure: lambda sender, task_id, exception, einfo, **_: seen.append(
            ("task_failure", task_id, type(exception).__name__)),
        signals.task_retry: lambda sender, request, reason, einfo, **_: seen.append(
            ("task_retry", request.id)),
        signals.task_postrun: lambda sender, task_id, retval, state, **_: seen.append(
            ("task_postrun", task_id, state, retval if state == states.SUCCESS else None)),
    }
    for signal, receiver in receivers.items():
        signal.connect(receiver)
    yield seen
    for signal, receiver in receivers.items():
        signal.disconnect(receiver)


def run(app: App, name: str, *args: Any) -> tuple[Any, str]:
    message = TaskMessage(id=new_task_id(), task=name, args=args)
    item = WorkItem(job_id=1, message=message, hostname="handlers@test",
                    delivery_info={"exchange": "", "routing_key": "celery", "priority": 0})
    return execute(app, item), message.id


def test_a_success_calls_the_handlers_and_signals_in_celerys_order(app, received, unique):
    @app.task(base=Recorded, name=f"add-{unique}")
    def add(x, y):
        return x + y

    outcome, task_id = run(app, add.name, 2, 3)
    assert outcome.state == states.SUCCESS
    assert Recorded.seen == [("before_start", task_id, (2, 3)), ("on_success", task_id, 5),
                             ("after_return", task_id, states.SUCCESS)]
    assert received == [("task_prerun", task_id, add.name, (2, 3)),
                        ("task_success", add.name, 5),
                        ("task_postrun", task_id, states.SUCCESS, 5)]


def test_a_failure_calls_on_failure_and_task_failure_after_storing_it(app, received, unique):
    @app.task(base=Recorded, name=f"fail-{unique}")
    def fail():
        raise ValueError("boom")

    outcome, task_id = run(app, fail.name)
    assert outcome.state == states.FAILURE
    assert app.backend.get_task_meta(task_id)["status"] == states.FAILURE
    assert Recorded.seen[1:] == [("on_failure", task_id, "ValueError", True),
                                 ("after_return", task_id, states.FAILURE)]
    assert received[1:] == [("task_failure", task_id, "ValueError"),
                            ("task_postrun", task_id, states.FAILURE, None)]


def test_a_retry_calls_on_retry_and_task_retry_but_not_after_return(app, received, unique):
    @app.task(base=Recorded, bind=True, name=f"retry-{unique}")
    def again(self):
        raise self.retry(exc=KeyError("later"), countdown=60)

    outcome, task_id = run(app, again.name)
    assert outcome.state == states.RETRY
    assert Recorded.seen[1:] == [("on_retry", task_id, "KeyError")]
    assert received[1:] == [("task_retry", task_id), ("task_postrun", task_id, states.RETRY,
                                                      None)]


def test_a_handler_that_raises_is_logged_and_the_outcome_stands(app, unique):
    class Broken(Task):
        def on_success(self, retval, task_id, args, kwargs):
            raise RuntimeError("handler bug")

    @app.task(base=Broken, name=f"ok-{unique}")
    def ok():
        return 1

    outcome, task_id = run(app, ok.name)
    assert outcome.state == states.SUCCESS
    assert app.backend.get_task_meta(task_id)["result"] == 1


def test_a_receiver_for_one_task_name_hears_only_that_task(app, unique):
    heard: list[str] = []

    @app.task(name=f"one-{unique}")
    def one():
        return 1

    @app.task(name=f"other-{unique}")
    def other():
        return 2

    def receiver(sender, task_id, **_):
        heard.append(sender.name)

    signals.task_prerun.connect(receiver, sender=one.name)
    try:
        run(app, one.name)
        run(app, other.name)
    finally:
        signals.task_prerun.disconnect(receiver, sender=one.name)
    assert heard == [one.name]


def test_shared_task_registers_with_every_app_made_before_and_after(app, unique):
    def double(x):
        return 2 * x
    double.__name__ = f"double_{unique}"

    task = shared_task(double)
    later = App("later", broker="memory://")
    try:
        assert task.name in app.tasks and task.name in later.tasks
        assert later.tasks[task.name].run is double
        assert run(app, task.name, 4)[0].result == "8"
    finally:
        later.close()
        app_module._shared_tasks.remove((double, {}))  # later tests' apps need not have it
