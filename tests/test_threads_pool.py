"""The threads pool: its watchdog is woken for the tasks that have a time limit, not for every
task; a task's end leaves nothing that stalls a profiled or traced thread; a limit or terminate
is taken by the task's code, or reported as such for that task, never in the result write or the
next task, under Python profilers and tracers too; a terminate before the task's code begins
keeps it from running."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap
import threading
import time
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


def _new_pool(concurrency: int = 1) -> tuple[ThreadsPool, list[Outcome], threading.Event]:
    """A pool (not started) that keeps what it reports, and an event set at each report."""
    outcomes: list[Outcome] = []
    done = threading.Event()

    def report(outcome: object) -> None:
        assert isinstance(outcome, Outcome)
        outcomes.append(outcome)
        done.set()

    return ThreadsPool(app, concurrency, report), outcomes, done


@pytest.fixture
def pool() -> Iterator[tuple[ThreadsPool, list[Outcome], threading.Event]]:
    pool, outcomes, done = _new_pool(2)
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
    way). Each event is a point where the task's thread runs Python code (the profiler's) and
    may stop for another thread; an interruption sent there is raised from the profiler (which
    then stops). At a ``c_call`` event CPython then skips the C function: the gate's
    ``__exit__``, once."""

    def __init__(self, pool: ThreadsPool, job_id: int, at: int) -> None:
        self.pool, self.job_id, self.at, self.seen = pool, job_id, at, 0
        self.sent: bool | None = None
        self.sent_in_result_write: bool | None = None

    def __call__(self, frame: Any, event: str, arg: Any) -> None:
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
    landing at its first instruction escape with the job still armed; with a C ``__exit__``
    alone, one sent at its ``c_call`` event skipped it (the gate stayed open: a second
    terminate landed in the result write)."""
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


@app.task(name="threads.answer", ignore_result=True)
def answer() -> int:
    return 42


def _apply(pool: ThreadsPool, job_id: int, name: str, *args: Any) -> None:
    message = TaskMessage(id=f"threads-{job_id}", task=name, args=args, ignore_result=True)
    assert pool.apply(WorkItem(job_id, message, {"routing_key": "threads"}, "threads@test",
                               None, None))


@pytest.mark.timeout(60)
def test_a_terminate_raised_by_a_tracer_as_the_task_is_armed_closes_the_gate(monkeypatch):
    """Under a Python tracer (pdb, debugpy, coverage's PyTracer) a terminate landing in the
    ``return`` event of the gate's ``__enter__`` is raised before the block, where its
    ``__exit__`` never runs: the gate stayed open, and a second terminate (or the hard limit)
    landed in the result write (stored as a FAILURE)."""
    pool, outcomes, done = _new_pool()
    sent: dict[str, bool] = {}

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if (event == "return" and frame.f_code.co_name == "__enter__"
                and type(frame.f_locals.get("self")).__name__ == "_Armed"
                and "first" not in sent):
            try:
                sent["first"] = pool.signal(1, 15)
            except TaskRevokedError:  # lands here, as the tracer returns
                sent["first"] = True
                raise
        return tracer

    def finish(*args: Any, **kwargs: Any) -> Outcome:
        if "in result write" not in sent:
            sent["in result write"] = pool.signal(1, 15)
        return _finish(*args, **kwargs)

    monkeypatch.setattr(execution, "_finish", finish)
    try:
        threading.settrace(tracer)
        pool.start()  # its threads are traced
        threading.settrace(None)
        _apply(pool, 1, "threads.answer")
        assert done.wait(10)
        done.clear()
        _apply(pool, 2, "threads.answer")
        assert done.wait(10)
    finally:
        threading.settrace(None)
        pool.stop()
    assert sent == {"first": True, "in result write": False}
    assert [(o.job_id, o.state) for o in outcomes] == [(1, "REVOKED"), (2, "SUCCESS")]


class _StrayAtPop(dict):  # type: ignore[type-arg]
    """The pool's table of jobs, where an interruption lands in the thread that removes job 1
    (after removing it), as one sent at the last moment would."""

    def pop(self, key: Any, *default: Any) -> Any:
        value = super().pop(key, *default)
        if key == 1 and value is not None:
            _set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
            _set_async_exc(ctypes.c_ulong(threading.get_ident()),
                           ctypes.py_object(TaskRevokedError))
        return value


@pytest.mark.timeout(60)
def test_an_interruption_landing_in_the_pools_own_code_is_reported_with_the_tasks_result():
    """Defense in depth: whatever lets one through (a free-threaded build, an interpreter that
    delivers it late), an interruption that lands in the pool's own bookkeeping after the task
    ended neither kills the pool's thread nor loses the report: the finished task is reported
    with its result (the old pool's thread died there, the job never reported)."""
    pool, outcomes, done = _new_pool()
    pool._running = _StrayAtPop()
    pool.start()
    try:
        for job_id in (1, 2):
            done.clear()
            _apply(pool, job_id, "threads.answer")
            assert done.wait(10), [(o.job_id, o.state) for o in outcomes]
    finally:
        pool.stop()
    assert [(o.job_id, o.state, o.result) for o in outcomes] == [(1, "SUCCESS", "42"),
                                                                  (2, "SUCCESS", "42")]
    assert pool.active == 0


RAN: list[str] = []


@app.task(name="threads.records", ignore_result=True)
def records() -> None:
    RAN.append("ran")


@pytest.mark.timeout(60)
def test_a_job_terminated_while_queued_for_its_thread_never_runs():
    """Celery's revoke(terminate=True) of a task not running yet: it never runs. The pool
    refused the terminate of a job waiting for its thread, and the task then ran to its end."""
    RAN.clear()
    pool, outcomes, done = _new_pool()
    try:
        _apply(pool, 1, "threads.records")  # no thread takes it yet
        assert pool.signal(1, 15)
        pool.start()
        assert done.wait(10)
    finally:
        pool.stop()
    assert [(o.job_id, o.state) for o in outcomes] == [(1, "REVOKED")]
    assert RAN == []


@pytest.mark.timeout(60)
def test_a_job_terminated_in_task_prerun_never_runs():
    """A terminate while ``task_prerun`` receivers run (or STARTED is stored) keeps the task from
    running. The pool refused it, and the task ran to its end."""
    from qtui.core import signals

    RAN.clear()
    pool, outcomes, done = _new_pool()
    pool.start()
    answers: list[bool] = []

    def terminate_in_prerun(**_: Any) -> None:
        answers.append(pool.signal(1, 15))

    signals.task_prerun.connect(terminate_in_prerun)
    try:
        _apply(pool, 1, "threads.records")
        assert done.wait(10)
    finally:
        signals.task_prerun.disconnect(terminate_in_prerun)
        pool.stop()
    assert answers == [True]
    assert [(o.job_id, o.state) for o in outcomes] == [(1, "REVOKED")]
    assert RAN == []


@pytest.mark.timeout(60)
def test_a_hard_limit_passing_during_the_result_write_is_not_raised_there(monkeypatch):
    """The task returned well inside its hard limit, which passes while its result is written:
    the limit is not raised there (the task is stored and reported with its result), nor in the
    next task on the thread. Without the gate it landed in the write (a FAILURE)."""
    pool, outcomes, done = _new_pool()
    pool.start()
    limit = 0.05

    def slow_finish(*args: Any, **kwargs: Any) -> Outcome:
        past = time.monotonic() + limit + 0.5  # the watchdog has long seen the deadline pass
        while time.monotonic() < past:  # Python code: where a sent limit would land
            pass
        return _finish(*args, **kwargs)

    monkeypatch.setattr(execution, "_finish", slow_finish)
    message = TaskMessage(id="threads-limited", task="threads.answer", ignore_result=True)
    try:
        assert pool.apply(WorkItem(1, message, {"routing_key": "threads"}, "threads@test",
                                   limit, None))
        assert done.wait(10)
        done.clear()
        _apply(pool, 2, "threads.answer")
        assert done.wait(10)
    finally:
        pool.stop()
    assert [(o.job_id, o.state, o.result) for o in outcomes] == [(1, "SUCCESS", "42"),
                                                                  (2, "SUCCESS", "42")]
