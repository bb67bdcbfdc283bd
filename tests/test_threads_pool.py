"""The threads pool's watchdog: woken for the tasks that have a time limit, not for every task;
and a task's end leaves nothing that stalls a profiled or traced thread."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qtui.core import App
from qtui.core.exceptions import TaskRevokedError
from qtui.core.protocol import TaskMessage
from qtui.workers import execution
from qtui.workers.execution import Outcome, WorkItem, _finish
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


class _TerminateAtEvent:
    """A profiler, installed by a task as its last line: at its ``at``-th event it terminates the
    task (``signal``, as ``revoke(terminate=True)`` does; the watchdog's limits go the same
    way). Each event but a C call's stands for a point where the task's thread may stop for
    another thread (a Python function's first instruction, the check after a C call returns);
    an interruption sent there lands there (raised from the profiler, which then stops)."""

    def __init__(self, pool: ThreadsPool, job_id: int, at: int) -> None:
        self.pool, self.job_id, self.at, self.seen = pool, job_id, at, 0
        self.sent: bool | None = None
        self.sent_in_result_write: bool | None = None

    def __call__(self, frame: Any, event: str, arg: Any) -> None:
        if event == "c_call":  # no point to stop at: the C function is called straight on
            return
        if self.pool._lock.locked():  # the pool's own step under its lock (no watchdog runs)
            return
        self.seen += 1
        if self.seen - 1 == self.at:
            try:
                self.sent = self.pool.signal(self.job_id, 15)
            except TaskRevokedError:  # in this thread: as the call returns
                self.sent = True
                raise

    def finish(self, *args: Any, **kwargs: Any) -> Outcome:
        """``execution._finish`` (stores the outcome), terminating the task once more first."""
        if self.sent_in_result_write is None:  # the task's own write, not the next task's
            try:
                self.sent_in_result_write = self.pool.signal(self.job_id, 15)
            except TaskRevokedError:
                self.sent_in_result_write = True
        return _finish(*args, **kwargs)


ENDING: dict[int, _TerminateAtEvent] = {}


@app.task(name="threads.ends_profiled", ignore_result=True)
def ends_profiled(job_id: int) -> int:
    sys.setprofile(ENDING[job_id])
    return job_id


@pytest.mark.timeout(120)
def test_an_interruption_as_a_task_ends_is_taken_by_the_task_or_never_sent(monkeypatch):
    """Terminate at every point from a task's last line on (each profiler event in turn, until
    the interruption is no longer sent): it is sent only while the task's block is open and
    then ends the task (REVOKED), never once the block is left (at the result write), and
    nothing reaches the next task on the thread. The pool's old Python ``__exit__`` let one
    landing at its first instruction escape with the job still armed."""
    outcomes: list[Outcome] = []
    done = threading.Event()

    def report(outcome: object) -> None:
        sys.setprofile(None)
        assert isinstance(outcome, Outcome)
        outcomes.append(outcome)
        done.set()

    pool = ThreadsPool(app, 1, report)
    pool.start()
    try:
        at = 0
        while True:
            job_id = 2 * at + 1
            ENDING[job_id] = ending = _TerminateAtEvent(pool, job_id, at)
            monkeypatch.setattr(execution, "_finish", ending.finish)
            for job, name, args in ((job_id, "threads.ends_profiled", (job_id,)),
                                    (job_id + 1, "threads.noop", ())):
                done.clear()
                message = TaskMessage(id=f"ending-{job}", task=name, args=args,
                                      ignore_result=True)
                assert pool.apply(WorkItem(job, message, {"routing_key": "threads"},
                                           "threads@test", None, None))
                assert done.wait(10), (at, name, [o.state for o in outcomes[-2:]])
            ended, following = outcomes[-2:]
            assert (at, ended.state) == (at, "REVOKED" if ending.sent else "SUCCESS")
            assert (at, ending.sent_in_result_write) == (at, False)
            assert (at, following.state) == (at, "SUCCESS")
            if ending.sent is False:
                break
            at += 1
    finally:
        pool.stop()
    assert at >= 2  # points inside the block were tried too
