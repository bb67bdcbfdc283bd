"""The prefork pool's outcomes reach the worker's main thread without a hop between threads
(issue 19 item 3): the main thread reads the children's result pipes itself
(``PreforkPool.collect``), every outcome a pipe holds in one read, and a task lost with its child
still wakes it up."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from qtui.core import App, states
from qtui.core.protocol import TaskMessage
from qtui.workers.execution import Lost, Outcome, WorkItem
from qtui.workers.pools.prefork import (
    PreforkPool,
    _Child,
    _CodeEnd,
    _pack_item,
    _pack_outcome,
    _unpack,
    _unpack_item,
    _write,
)

app = App("prefork-outcomes", broker="memory://", backend=None)


@app.task(name="outcomes.noop", ignore_result=True)
def noop() -> None:
    pass


@app.task(name="outcomes.sleep", ignore_result=True)
def sleep(seconds: float) -> None:
    time.sleep(seconds)


@app.task(name="outcomes.size", ignore_result=True)
def size(text: str) -> int:
    return len(text)


class Reports:
    """What the pool reported, with the thread each report came from."""

    def __init__(self) -> None:
        self.events: list[tuple[Outcome | Lost, int]] = []

    def __call__(self, event: Outcome | Lost) -> None:
        self.events.append((event, threading.get_ident()))


def item(job_id: int, task: str, *args: object) -> WorkItem:
    message = TaskMessage(id=f"outcomes-{job_id}", task=task, args=args, ignore_result=True)
    return WorkItem(job_id, message, {"routing_key": "outcomes"}, "outcomes@test")


def run_noops(prefork: PreforkPool, reports: Reports, n: int) -> None:
    """Run ``n`` no-op tasks (job ids 1 to n) through the pool until each is reported."""
    for job_id in range(1, n + 1):
        while not prefork.apply(item(job_id, "outcomes.noop")):
            assert prefork.collect(1.0)
    while len(reports.events) < n:
        assert prefork.collect(1.0)


@pytest.fixture
def pool() -> Iterator[tuple[PreforkPool, Reports]]:
    reports = Reports()
    pool = PreforkPool(app, 2, reports)
    pool.start()
    try:
        yield pool, reports
    finally:
        pool.terminate()


@pytest.mark.timeout(60)
def test_outcomes_are_reported_from_the_thread_that_collects_them(
        pool: tuple[PreforkPool, Reports]):
    prefork, reports = pool
    run_noops(prefork, reports, 20)
    assert sorted(event.job_id for event, _ in reports.events) == list(range(1, 21))
    assert {event.state for event, _ in reports.events} == {states.SUCCESS}
    assert {thread for _, thread in reports.events} == {threading.get_ident()}


@pytest.mark.timeout(30)
def test_a_task_lost_with_its_child_wakes_the_collecting_thread(
        pool: tuple[PreforkPool, Reports]):
    """The watch thread reports the loss and wakes the main thread's wait: collect(120) returns
    long before the test's timeout."""
    prefork, reports = pool
    assert prefork.apply(item(1, "outcomes.sleep", 60))
    pid = prefork.pid_of(1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while not reports.events:
        prefork.collect(120.0)
    (lost, _), = reports.events
    assert isinstance(lost, Lost) and lost.job_id == 1 and lost.cause == "died"


@pytest.mark.timeout(60)
def test_a_work_item_larger_than_a_pipe_holds_reaches_its_child_whole(
        pool: tuple[PreforkPool, Reports]):
    """A work item crosses the job pipe after its length; a child reads one bigger than the pipe
    holds in as many reads as it takes, and the small ones after it as before."""
    prefork, reports = pool
    for job_id, text in ((1, "x" * 300_000), (2, "y"), (3, "zz"), (4, "w" * 70_000)):
        while not prefork.apply(item(job_id, "outcomes.size", text)):
            assert prefork.collect(1.0)
    while len(reports.events) < 4:
        assert prefork.collect(1.0)
    assert sorted((e.job_id, e.state, e.result) for e, _ in reports.events) == [
        (1, states.SUCCESS, "300000"), (2, states.SUCCESS, "1"), (3, states.SUCCESS, "2"),
        (4, states.SUCCESS, "70000")]


@pytest.mark.timeout(30)
def test_one_read_reports_every_outcome_the_pipe_holds_and_waits_for_a_partial_one():
    """Two outcomes waiting in a result pipe come out of one read; one bigger than the pipe
    (a long traceback) comes out whole once its last part has been read."""
    results, sender = multiprocessing.Pipe(duplex=False)
    child = _Child(1, os.getpid(), sender, results, None, _CodeEnd())
    try:
        for job_id in (1, 2):
            _write(sender.fileno(), _pack_outcome(Outcome(job_id, states.SUCCESS, 0.0)))
        assert [o.job_id for o in child.read_outcomes() or []] == [1, 2]
        big = Outcome(3, states.FAILURE, 0.0, traceback="x" * 300_000)
        writer = threading.Thread(target=_write, args=(sender.fileno(), _pack_outcome(big)))
        writer.start()
        read: list[Outcome] = []
        while not read:
            read = child.read_outcomes() or []
        writer.join()
        assert [(o.job_id, o.traceback) for o in read] == [(3, big.traceback)]
        assert not child.frames.unread
    finally:
        results.close()
        sender.close()


def test_work_items_and_outcomes_cross_the_pipe_unchanged():
    """The parent and its children exchange plain values, rebuilt into equal objects."""
    message = TaskMessage(id="wire-1", task="outcomes.sleep", args=(1.5,), kwargs={"a": [1]},
                          eta=datetime.now(timezone.utc), retries=2, time_limit=9.0,
                          soft_time_limit=5.0, headers={"custom": "x"}, sent_at=12.5)
    sent = WorkItem(7, message, {"routing_key": "outcomes"}, "outcomes@test", 9.0, 5.0)
    received = _unpack_item(_pack_item(sent))
    assert received == sent and vars(received.message) == vars(message)
    outcome = Outcome(7, states.RETRY, 0.25, result=None, exception="Retry()", traceback="tb",
                      retry_when=3.0, dead_letter="why", requeue=True, retiring=True)
    assert vars(_unpack(_pack_outcome(outcome))) == vars(outcome)


@pytest.mark.timeout(60)
def test_an_outcome_names_the_child_that_ran_it(pool: tuple[PreforkPool, Reports]):
    """Each child's outcomes carry its own pid (kept per process, not asked for per task), never
    the worker's."""
    prefork, reports = pool
    run_noops(prefork, reports, 6)
    pids = {event.pid for event, _ in reports.events}
    assert pids <= set(prefork.pids()) and os.getpid() not in pids
