"""The threads pool's watchdog: woken for the tasks that have a time limit, not for every task."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from qtui.core import App
from qtui.core.protocol import TaskMessage
from qtui.workers.execution import Outcome, WorkItem
from qtui.workers.pools.threads import ThreadsPool

app = App("threads-pool", broker="memory://", backend=None)


@app.task(name="threads.noop", ignore_result=True)
def noop() -> None:
    pass


class CountingEvent(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self.sets = 0

    def set(self) -> None:
        self.sets += 1
        super().set()


@pytest.fixture
def pool() -> Iterator[tuple[ThreadsPool, list[Outcome], threading.Event]]:
    outcomes: list[Outcome] = []
    done = threading.Event()

    def report(outcome: object) -> None:
        assert isinstance(outcome, Outcome)
        outcomes.append(outcome)
        done.set()

    pool = ThreadsPool(app, 2, report)
    pool._watchdog_wake = CountingEvent()
    pool.start()
    try:
        yield pool, outcomes, done
    finally:
        pool.stop()


def _run(pool: ThreadsPool, done: threading.Event, job_id: int, **limits: float) -> None:
    message = TaskMessage(id=f"threads-{job_id}", task="threads.noop", ignore_result=True)
    done.clear()
    assert pool.apply(WorkItem(job_id, message, {"routing_key": "threads"}, "threads@test",
                               limits.get("time_limit"), limits.get("soft_time_limit")))
    assert done.wait(10)


@pytest.mark.timeout(60)
def test_a_task_without_time_limits_does_not_wake_the_watchdog(pool):
    """A wake-up per task is a thread switch per task, for nothing to watch (main woke it)."""
    threads, outcomes, done = pool
    _run(threads, done, 1)
    assert [o.state for o in outcomes] == ["SUCCESS"]
    assert threads._watchdog_wake.sets == 0


@pytest.mark.timeout(60)
def test_a_task_with_a_time_limit_wakes_the_watchdog(pool):
    threads, outcomes, done = pool
    _run(threads, done, 1, time_limit=30.0)
    assert [o.state for o in outcomes] == ["SUCCESS"]
    assert threads._watchdog_wake.sets >= 1
