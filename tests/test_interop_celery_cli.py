"""Celery's own command line (``celery -A app inspect ...`` / ``celery control ...``) steering a
qtui worker: the replies read as they do from a Celery worker. One qtui worker (prefork, two
processes, Redis) serves the module; each test runs the real ``celery`` program."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from qtui.core.exceptions import TaskRevokedError

from .processes import write_module
from .worker_helpers import ModuleWorkers, hostname_of, module_workers  # noqa: F401 - fixtures

CELERY = str(Path(sys.executable).with_name("celery"))

CELERY_APP = """
from celery import Celery

app = Celery("celeryapp", broker={broker!r})
"""


class CeleryCLI:
    """The ``celery`` program with an app on the worker's broker, aimed at the worker."""

    def __init__(self, directory: Path, broker: str, hostname: str) -> None:
        self.directory = directory
        self.hostname = hostname
        write_module(directory, "celeryapp", CELERY_APP.format(broker=broker))

    def run(self, *words: str) -> subprocess.CompletedProcess[str]:
        argv = [CELERY, "-A", "celeryapp", *words, "-d", self.hostname, "-t", "10"]
        out = subprocess.run(argv, cwd=self.directory, capture_output=True, text=True,
                             timeout=60, env={**os.environ, "PYTHONPATH": str(self.directory)})
        assert out.returncode == 0, f"{' '.join(words)}:\n{out.stdout}\n{out.stderr}"
        return out

    def json(self, *words: str) -> Any:
        """The worker's reply, from the command's ``--json`` output."""
        replies = json.loads(self.run(*words, "--json").stdout)
        return replies[self.hostname]


@pytest.fixture(scope="module")
def cli(module_workers: ModuleWorkers, tmp_path_factory):
    setup, _ = module_workers.get("redis", "-P", "prefork", "-c", "2")
    app = setup.app()
    yield CeleryCLI(tmp_path_factory.mktemp("celery-cli"), setup.broker, hostname_of(setup)), app
    app.close()


@pytest.mark.timeout(60)
def test_celery_inspect_ping(cli):
    celery, _ = cli
    out = celery.run("inspect", "ping").stdout
    assert f"{celery.hostname}: OK" in out and "pong" in out and "1 node online." in out


@pytest.mark.timeout(60)
def test_celery_inspect_stats(cli):
    celery, _ = cli
    stats = celery.json("inspect", "stats")
    assert stats["pool"]["max-concurrency"] == 2 and len(stats["pool"]["processes"]) == 2
    assert {"total", "pid", "clock", "uptime", "broker", "prefetch_count", "rusage"} <= set(stats)


@pytest.mark.timeout(60)
def test_celery_inspect_registered(cli):
    celery, _ = cli
    out = celery.run("inspect", "registered").stdout
    assert "* tasks.add" in out and "* tasks.tick [rate_limit=5/s]" in out


@pytest.mark.timeout(90)
def test_celery_inspect_active_shows_a_running_task(cli):
    celery, app = cli
    result = app.send_task("tasks.slow", args=[30, "cli"])
    try:
        deadline = time.monotonic() + 30
        while not (found := [t for t in celery.json("inspect", "active")
                             if t["id"] == result.id]):
            assert time.monotonic() < deadline, "the task never showed as active"
        (task,) = found
        assert (task["name"], task["args"]) == ("tasks.slow", [30, "cli"])
    finally:
        app.control.terminate(result.id, destination=[celery.hostname])
    result.get(timeout=30, propagate=False)


@pytest.mark.timeout(60)
def test_celery_control_rate_limit(cli):
    celery, app = cli
    out = celery.run("control", "rate_limit", "tasks.mark", "10/m").stdout
    assert f"{celery.hostname}: OK" in out and "new rate limit set successfully" in out
    registered = app.control.inspect(destination=[celery.hostname], timeout=10) \
        .registered("rate_limit")[celery.hostname]
    assert "tasks.mark [rate_limit=10/m]" in registered
    celery.run("control", "rate_limit", "tasks.mark", "0")


@pytest.mark.timeout(180)  # three `celery` programs, each up to 10 s for its reply, at load 8
def test_celery_control_revoke_and_terminate(cli):
    celery, app = cli
    # Due well after the `celery` program can start and send the revoke on a loaded machine
    # (at load 8 a 3 s countdown ran the task first); its REVOKED state is stored when it is due.
    later = app.send_task("tasks.mark", args=["never"], countdown=15)
    out = celery.run("control", "revoke", later.id).stdout
    assert f"tasks {{'{later.id}'}} flagged as revoked" in out
    assert isinstance(later.get(timeout=45, propagate=False), TaskRevokedError)
    running = app.send_task("tasks.slow", args=[30, "terminated"])
    inspect = app.control.inspect(destination=[celery.hostname], timeout=10)
    deadline = time.monotonic() + 30
    # No reply within the inspect's timeout (a loaded machine) is an empty answer: ask again.
    while running.id not in [t["id"] for t in (inspect.active() or {}).get(celery.hostname, [])]:
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.1)
    out = celery.run("control", "terminate", "SIGKILL", running.id).stdout
    assert f"terminate: {running.id}" in out
    assert isinstance(running.get(timeout=30, propagate=False), TaskRevokedError)
