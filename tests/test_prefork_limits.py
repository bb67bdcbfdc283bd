"""The prefork pool keeps enforcing hard time limits when a task forks a grandchild that keeps
the child's pipes open, and after a terminate-revoke the task shrugs off."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from qtui.core import states
from qtui.core.exceptions import TimeLimitExceeded

from .processes import write_module
from .worker_helpers import TASKS, Setup, redis_setup  # noqa: F401 - fixtures

#: How long the stubborn tasks below would run if nothing stopped them: the test waits far less.
LONG = 60

EXTRA_TASKS = """

@app.task
def fork_grandchild(seconds):
    pid = os.fork()
    if pid == 0:  # the grandchild: holds every fd the pool child had, and sleeps
        try:
            time.sleep(seconds)
        finally:
            os._exit(0)
    record("grandchild", grandchild=pid)
    time.sleep(seconds)
    record("done")


@app.task
def ignore_sigterm(seconds):
    signal.signal(signal.SIGTERM, lambda signum, frame: record("sigterm"))
    record("started")
    time.sleep(seconds)
    record("done")
"""


@pytest.fixture
def setup(redis_setup: Setup) -> Iterator[Setup]:
    write_module(redis_setup.directory, "tasks", TASKS + EXTRA_TASKS)
    try:
        yield redis_setup
    finally:
        for record in redis_setup.records("grandchild"):
            try:
                os.kill(record["grandchild"], signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.timeout(90)
def test_hard_time_limit_kills_a_task_whose_grandchild_holds_its_pipes(setup: Setup):
    with setup.worker("-P", "prefork", "-c", "1"):
        app = setup.app()
        result = app.send_task("tasks.fork_grandchild", args=[LONG], time_limit=2)
        # Before the fix the kill was only noticed when the grandchild exited (LONG s).
        exc = result.get(timeout=20, propagate=False)
        assert result.state == states.FAILURE and isinstance(exc, TimeLimitExceeded)
        grandchild = setup.wait_records("grandchild", 1)[0]["grandchild"]
        os.kill(grandchild, 0)  # still alive: the pool did not wait for it
        assert app.send_task("tasks.add", args=[1, 2]).get(timeout=20) == 3  # the slot is back
        app.close()


@pytest.mark.timeout(90)
def test_hard_time_limit_still_holds_after_a_terminate_revoke_the_task_ignores(setup: Setup):
    with setup.worker("-P", "prefork", "-c", "1"):
        app = setup.app()
        result = app.send_task("tasks.ignore_sigterm", args=[LONG], time_limit=3)
        setup.wait_records("started", 1)
        app.control.revoke(result.id, terminate=True)  # SIGTERM, which the task handles
        assert setup.wait_records("sigterm", 1, timeout=10)
        # Before the fix it ran on to SUCCESS after LONG s.
        exc = result.get(timeout=20, propagate=False)
        assert result.state == states.REVOKED and "terminated" in str(exc)
        assert setup.records("done") == []
        assert app.send_task("tasks.add", args=[2, 2]).get(timeout=20) == 4
        app.close()
