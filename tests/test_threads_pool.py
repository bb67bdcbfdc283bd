"""The threads pool's watchdog: woken for the tasks that have a time limit, not for every task;
and a task's end leaves nothing that stalls a profiled or traced thread."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

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


PROFILED_AFTER_TASKS = """
import sys, threading
from qtui.core import App
from qtui.core.protocol import TaskMessage
from qtui.workers.execution import WorkItem
from qtui.workers.pools.threads import ThreadsPool

app = App("threads-profiled", broker="memory://", backend=None)

@app.task(name="threads.nap", ignore_result=True)
def nap(seconds):
    import time
    time.sleep(seconds)

done = threading.Event()
states = []
pool = ThreadsPool(app, 2, lambda outcome: (states.append(outcome.state), done.set()))
pool.start()
message = TaskMessage(id="profiled", task="threads.nap", args=({seconds},), ignore_result=True)
assert pool.apply(WorkItem(1, message, {{"routing_key": "threads"}}, "threads@test", None, None))
if {terminate}:
    while not pool.signal(1, 15):  # once the task runs: lands as its sleep returns
        pass
assert done.wait(10)
sys.setprofile(lambda *args: None)  # slows this thread, as cProfile or yappi would
print("returned", states, flush=True)  # a call: where a stalled thread spins
"""


def _profile_after_a_task(tmp_path: Path, seconds: float, terminate: bool) -> str:
    """Run a task in the pool in a process of its own, then profile its main thread: what the
    process prints once a profiled call returns (killed after 30 s)."""
    script = tmp_path / "profiled.py"
    script.write_text(textwrap.dedent(PROFILED_AFTER_TASKS.format(seconds=seconds,
                                                                  terminate=terminate)))
    try:
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              timeout=30)
    except subprocess.TimeoutExpired:
        return "stalled"
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.timeout(60)
def test_a_profiled_thread_runs_on_after_a_task_ends(tmp_path):
    """Dropping a pending interruption at every task's end was a cancel (SetAsyncExc with NULL)
    that left CPython 3.11's eval breaker set: a worker's main thread under cProfile or yappi
    then spun at its next call, with no task running (the reported stall)."""
    assert _profile_after_a_task(tmp_path, 0, terminate=False) == "returned ['SUCCESS']"


@pytest.mark.timeout(60)
def test_a_profiled_thread_runs_on_after_a_task_is_interrupted(tmp_path):
    assert _profile_after_a_task(tmp_path, 0.5, terminate=True) == "returned ['REVOKED']"
