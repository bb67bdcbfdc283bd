"""SIGHUP to a worker, as a closed terminal or a supervisor's reload sends it, is Celery's warm
restart: the running task finishes, then the worker starts again with the same command line;
with its output on a terminal it only shuts down warm. It never dies mid-task."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qtui.core import App

from .processes import stop, write_module
from .redis_server import redis_server, spare_port

TASKS = """
import time

from qtui.core import App

app = App("huptasks", broker={broker!r}, backend={broker!r}, task_default_queue={queue!r})


@app.task(name="hup.sleep", acks_late=True)
def sleep(seconds):
    time.sleep(seconds)
    return seconds
"""


def block_sighup() -> None:
    """As a supervisor may start a worker: SIGHUP blocked (the worker unblocks it at entry)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})


@pytest.fixture
def private_redis(tmp_path) -> Iterator[str]:
    """A redis-server of the test's own: a worker's start scans the DB for dead owners'
    deliveries, which another run's crafted entries on the shared one can stop."""
    port = spare_port()
    with redis_server(tmp_path, port, durable=False):
        yield f"redis://127.0.0.1:{port}/0"


def wait_for(path: Path, text: str, count: int = 1, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while (log := path.read_text()).count(text) < count:
        assert time.monotonic() < deadline, log
        time.sleep(0.1)
    return log


def start_worker(tmp_path: Path, broker: str, pool: str, out: Any,
                 preexec: Callable[[], None] | None = None
                 ) -> tuple[subprocess.Popen[bytes], App]:
    """A worker of :data:`TASKS` on a queue of its own, its output to ``out``; and a client."""
    queue = f"hup-{uuid.uuid4().hex[:10]}"
    write_module(tmp_path, "huptasks", TASKS.format(broker=broker, queue=queue))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "qtui.tui.cli", "-A", "huptasks", "run-worker", "-P", pool,
         "-c", "1", "-l", "INFO"], cwd=tmp_path, env=env, stdout=out,
        stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec)
    return worker, App("client", broker=broker, backend=broker, task_default_queue=queue)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_sighup_finishes_the_running_task_then_restarts_the_worker(tmp_path, private_redis, pool):
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker, app = start_worker(tmp_path, private_redis, pool, out, block_sighup)
    try:
        wait_for(log, "ready")
        first = app.send_task("hup.sleep", (3,))
        wait_for(log, f"[{first.id}] received")
        time.sleep(0.5)
        os.killpg(worker.pid, signal.SIGHUP)  # the whole group, as a closed terminal does
        assert first.get(timeout=30) == 3
        text = wait_for(log, "ready", count=2)
        assert worker.poll() is None, text
        second = app.send_task("hup.sleep", (0,))
        assert second.get(timeout=30) == 0
    finally:
        stop(worker)  # type: ignore[arg-type]
        app.close()
    text = log.read_text()
    assert "Warm shutdown (SIGHUP), then restarting" in text, text
    assert "Restarting:" in text, text
    assert "Traceback" not in text, text


@pytest.mark.timeout(90)
def test_sigterm_after_sighup_stops_the_worker_without_restarting(tmp_path, private_redis):
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker, app = start_worker(tmp_path, private_redis, "solo", out)
    try:
        wait_for(log, "ready")
        task = app.send_task("hup.sleep", (2,))
        wait_for(log, f"[{task.id}] received")
        time.sleep(0.5)
        worker.send_signal(signal.SIGHUP)
        wait_for(log, "Warm shutdown (SIGHUP)")
        worker.send_signal(signal.SIGTERM)  # a supervisor stopping it: no restart
        assert worker.wait(30) == 0
    finally:
        stop(worker)  # type: ignore[arg-type]
        app.close()
    assert "Restarting:" not in log.read_text(), log.read_text()


@pytest.mark.timeout(90)
def test_sighup_on_a_terminal_shuts_down_warm_without_restarting(tmp_path, private_redis):
    primary, secondary = pty.openpty()
    worker, app = start_worker(tmp_path, private_redis, "solo", secondary)
    os.close(secondary)
    said = b""

    def read_until(text: bytes, timeout: float = 30.0) -> None:
        nonlocal said
        deadline = time.monotonic() + timeout
        while text not in said:
            assert time.monotonic() < deadline, said.decode(errors="replace")
            if not select.select([primary], [], [], 0.2)[0]:
                continue
            try:
                said += os.read(primary, 65536)
            except OSError:  # the worker closed the terminal: nothing more to read
                break
    try:
        read_until(b"ready")
        task = app.send_task("hup.sleep", (2,))
        read_until(b"received")  # a terminal's log lines may wrap the id
        time.sleep(0.5)  # running, not only received (that one would be put back)
        worker.send_signal(signal.SIGHUP)
        read_until(b"stopped")
        assert task.get(timeout=5) == 2
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            stop(worker)  # type: ignore[arg-type]
        os.close(primary)
        app.close()
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", said.decode(errors="replace")).split())
    assert "Warm shutdown (SIGHUP), not restarting" in text, text
    assert "Restarting:" not in text, text
