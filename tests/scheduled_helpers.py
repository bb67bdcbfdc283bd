"""What the ``qtui scheduled`` and ``qtui eta run|delete`` tests share (test_scheduled_listing.py,
test_scheduled_actions.py, test_console_scheduled_live.py): the CLI run against a test's setup,
its tasks as ``scheduled --json`` lists them, and tasks held by the broker or by a worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from .test_eta_store import held
from .worker_helpers import Setup, wait_for

#: Seconds within which a worker of these tests holds an ETA task itself.
HORIZON = 30.0


@pytest.fixture(params=["redis_setup", "sqlite_setup"])
def horizon_setup(request: pytest.FixtureRequest) -> Setup:
    """A Redis and an embedded-broker setup whose workers hold ETA tasks due within HORIZON
    (the test module imports both fixtures)."""
    setup: Setup = request.getfixturevalue(request.param)
    setup.conf["worker_eta_horizon"] = HORIZON
    return setup


def qtui(setup: Setup, *argv: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qtui.tui.cli", "-A", "tasks", *argv],
                          cwd=setup.directory, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **setup.env, "PYTHONPATH": str(setup.directory),
                               "COLUMNS": str(columns)})


def scheduled(setup: Setup, *argv: str) -> dict[str, Any]:
    """``qtui scheduled --json``, with only this test's tasks (other tests' workers share the
    broker and answer ``inspect scheduled`` too)."""
    done = qtui(setup, "scheduled", "--json", "-t", "1", *argv)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    found["tasks"] = [t for t in found["tasks"] if t["queue"] == setup.queue]
    return found


def send_far(setup: Setup, tag: str, countdown: float = 600) -> Any:
    """A task beyond the horizon; returns once the running worker has stored it in the broker."""
    result = setup.app().send_task("tasks.mark", args=[tag], countdown=countdown)
    assert wait_for(lambda: held(setup) >= 1, 20)
    return result


def held_by_worker(setup: Setup, task_id: str) -> Any:
    """The task as ``read`` shows it, once its worker reports holding it."""
    from qtui.core.scheduled import read

    def found() -> Any:
        return next((t for t in read(setup.app(), [setup.queue]).tasks if t.id == task_id),
                    None)
    assert wait_for(found, 20)
    return found()
