"""Celery's first-steps tutorial end to end with ``qtui run-worker``, and a real Celery client
whose tasks a qtui worker runs and whose AsyncResult reads what the qtui worker stored."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .processes import running, write_module
from .worker_helpers import Setup, any_setup, wait_for  # noqa: F401 - fixtures

TUTORIAL_TASKS = """
from qtui.core import App

app = App("tasks", broker="{broker}", backend="{backend}", task_default_queue="{queue}")

@app.task
def add(x, y):
    return x + y
"""

TUTORIAL_CLIENT = """
from tasks import add

result = add.delay(4, 4)
print("ready before:", result.ready())
print("result:", result.get(timeout=20))
print("ready after:", result.ready(), result.successful(), result.state)
"""


@pytest.mark.timeout(120)
def test_first_steps_tutorial_end_to_end(any_setup: Setup):
    directory = any_setup.directory
    write_module(directory, "tasks", TUTORIAL_TASKS.format(
        broker=any_setup.broker, backend=any_setup.backend, queue=any_setup.queue))
    write_module(directory, "client", TUTORIAL_CLIENT)
    argv = [sys.executable, "-m", "qtui.tui.cli", "-A", "tasks", "run-worker", "--loglevel=INFO"]
    with running(argv, directory, ready="ready.") as worker:
        out = subprocess.run([sys.executable, "client.py"], cwd=directory, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "result: 8" in out.stdout
        assert "ready after: True True SUCCESS" in out.stdout
        # The client may read the result a moment before the worker logs the success.
        assert wait_for(lambda: "succeeded in" in worker.log_path.read_text(), timeout=10)
        log = worker.log_path.read_text()
    assert "Task tasks.add[" in log


CELERY_CLIENT = """
import sys
from celery import Celery

broker, backend, queue = sys.argv[1:4]
app = Celery("client", broker=broker, backend=backend)
app.conf.task_default_queue = queue
ok = app.send_task("tasks.add", args=[2, 3])
print("add:", ok.get(timeout=30))
bad = app.send_task("tasks.fail", args=["from celery"])
try:
    bad.get(timeout=30)
except Exception as exc:
    print("fail:", type(exc).__name__, exc, bad.state)
later = app.send_task("tasks.add", args=[1, 1], countdown=1)
print("countdown:", later.get(timeout=30))
"""


@pytest.mark.timeout(180)
def test_a_celery_client_send_task_is_run_by_a_qtui_worker(any_setup: Setup):
    write_module(any_setup.directory, "celery_client", CELERY_CLIENT)
    with any_setup.worker("-P", "prefork", "-c", "2"):
        out = subprocess.run(
            [sys.executable, "celery_client.py", any_setup.broker, any_setup.backend,
             any_setup.queue], cwd=any_setup.directory, capture_output=True, text=True,
            timeout=120)
    assert out.returncode == 0, out.stderr
    assert "add: 5" in out.stdout
    assert "fail: ValueError from celery FAILURE" in out.stdout
    assert "countdown: 2" in out.stdout


EMBEDDED_TASKS = """
from qtui.core import App

app = App("tasks")

@app.task
def add(x, y):
    return x + y
"""


@pytest.mark.timeout(120)
def test_first_steps_tutorial_on_the_embedded_default(tmp_path, data_home):
    write_module(tmp_path, "tasks", EMBEDDED_TASKS)
    write_module(tmp_path, "client", TUTORIAL_CLIENT)
    argv = [sys.executable, "-m", "qtui.tui.cli", "-A", "tasks", "run-worker", "--loglevel=INFO"]
    with running(argv, tmp_path, ready="ready.", env={"XDG_DATA_HOME": data_home}) as worker:
        out = subprocess.run([sys.executable, "client.py"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60, env={**os.environ, "XDG_DATA_HOME": data_home})
        assert out.returncode == 0, out.stderr + worker.log_path.read_text()[-3000:]
        assert "result: 8" in out.stdout
        assert "ready after: True True SUCCESS" in out.stdout
        assert wait_for(lambda: "succeeded in" in worker.log_path.read_text(), timeout=10)
        log = worker.log_path.read_text()
    assert "sqlite://" in log
