"""``Task.apply()`` and ``task_always_eager``: a task runs in the caller, as Celery runs it for
tests: its handlers and signals called, retries run at once, failures returned (or raised with
``task_eager_propagates``). Pure unit tests: nothing reaches a broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qtui.core import App, Task, signals, states


@pytest.fixture
def app() -> Iterator[App]:
    app = App("eager", broker="memory://")
    yield app
    app.close()


def test_apply_runs_the_task_here_and_returns_its_result(app):
    @app.task(bind=True)
    def where(self, x):
        return [x, self.request.is_eager, self.request.called_directly]

    result = where.apply((1,))
    assert result.get() == [1, True, False]
    assert result.state == states.SUCCESS and result.successful() and result.ready()


def test_always_eager_makes_delay_run_at_once_with_handlers_and_signals(app):
    seen: list[str] = []

    class Recorded(Task):
        def on_success(self, retval, task_id, args, kwargs):
            seen.append(f"on_success {retval}")

    @app.task(base=Recorded)
    def add(x, y):
        return x + y

    def prerun(sender, task_id, **_):
        seen.append(f"prerun {sender.name}")

    signals.task_prerun.connect(prerun)
    app.conf.task_always_eager = True
    try:
        assert add.delay(2, 3).get() == 5
    finally:
        signals.task_prerun.disconnect(prerun)
    assert seen == [f"prerun {add.name}", "on_success 5"]


def test_an_eager_retry_runs_again_at_once_until_it_succeeds(app):
    @app.task(bind=True, max_retries=3)
    def again(self):
        if self.request.retries < 2:
            raise self.retry(countdown=60)
        return self.request.retries

    result = again.apply()
    assert (result.state, result.get()) == (states.SUCCESS, 2)


def test_autoretry_past_max_retries_fails_with_the_task_exception(app):
    @app.task(autoretry_for=(KeyError,), max_retries=2)
    def never():
        raise KeyError("never")

    result = never.apply()
    assert result.failed()
    with pytest.raises(KeyError):
        result.get()
    assert isinstance(result.get(propagate=False), KeyError)
    assert "KeyError" in result.traceback


def test_eager_propagates_raises_the_failure_from_apply(app):
    @app.task
    def fail():
        raise ValueError("boom")

    app.conf.task_eager_propagates = True
    with pytest.raises(ValueError, match="boom"):
        fail.apply()
