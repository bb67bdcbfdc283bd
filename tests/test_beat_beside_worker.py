"""``qtui run-worker -B``: the worker also runs a beat, and the periodic task runs on it."""

from __future__ import annotations

import sys
import time

import pytest

from .beat_helpers import write_config
from .processes import running, write_module

TASKS = """
from pathlib import Path

from qtui.core import App

app = App("tasks")


@app.task
def tick():
    with open(Path(__file__).with_name("ticks.txt"), "a") as fh:
        fh.write("tick\\n")
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_worker_started_with_B_sends_and_runs_the_periodic_task(tmp_path, unique,
                                                                  pool: str) -> None:
    queue = f"beat-{unique}"
    config = write_config(tmp_path, f"sqlite://{tmp_path / 'broker.sqlite'}", "beside", queue)
    write_module(tmp_path, "tasks", TASKS)
    argv = [sys.executable, "-m", "qtui.tui.cli", "-A", "tasks", "--config", str(config),
            "run-worker", "-B", "-P", pool, "-Q", queue]
    ticks = tmp_path / "ticks.txt"
    with running(argv, tmp_path, ready="ready."):
        deadline = time.monotonic() + 45
        while not (ticks.exists() and len(ticks.read_text().splitlines()) >= 3):
            assert time.monotonic() < deadline, "the periodic task did not run three times"
            time.sleep(0.2)
