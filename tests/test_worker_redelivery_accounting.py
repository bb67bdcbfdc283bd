"""Only a delivery whose task started, and whose worker was then lost, counts against
``task_max_redeliveries``: a prefetched task and a task given back by a warm shutdown never do
(issue 12 items 7 and 8, issue 21 item 6), on Redis, RabbitMQ and the embedded broker."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from .worker_helpers import REDIS_URL, Setup, broker_urls, make_setup, wait_for

#: RabbitMQ with Redis results: the started deliveries are recorded in the result backend.
BROKERS = ["redis", "rabbitmq", "sqlite"]


@pytest.fixture(params=BROKERS)
def setup(request, tmp_path, unique) -> Iterator[Setup]:
    url, backend = broker_urls(request.param, tmp_path)
    if request.param == "rabbitmq":
        backend = REDIS_URL
    conf = {"task_max_redeliveries": 1, "worker_shutdown_timeout": 0.5}
    if request.param == "redis":
        conf["broker_transport_options"] = {"visibility_timeout": 1}
    made = make_setup(tmp_path, f"qw-{unique}", url, backend, **conf)
    yield made
    made.cleanup()


def _wait_log(proc, text: str, timeout: float = 30.0) -> None:
    assert wait_for(lambda: text in proc.log_path.read_text(), timeout), \
        f"{text!r} not in the worker's log:\n{proc.log_path.read_text()[-3000:]}"


@pytest.mark.timeout(120)
def test_a_killed_worker_counts_the_task_it_started_and_not_the_one_it_held(setup: Setup):
    """task_max_redeliveries = 1: the running task is dead-lettered after one kill; the task
    held for its ETA survives two kills and then runs once."""
    app = setup.app()
    held = app.send_task("tasks.mark", args=["held"], countdown=12)
    running = app.send_task("tasks.slow", args=[60, "running"])
    for name in ("first", "second"):
        with setup.worker("-P", "solo", "--prefetch-multiplier", "4", name=name) as proc:
            _wait_log(proc, f"[{held.id}] received")
            if name == "first":
                assert setup.wait_records("started", 1)
            else:
                _wait_log(proc, "Message moved to")  # the running task, dead-lettered
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with setup.worker("-P", "solo", name="third"):
        assert wait_for(lambda: setup.records("mark"), 40)
        dead = setup.dead_letters(expected=1)
    assert [m.headers["id"] for m in dead] == [running.id]
    assert "the worker holding it was lost" in dead[0].headers["x-qtui-dead-reason"]
    assert [r["tag"] for r in setup.records("mark")] == ["held"]
    assert [r["tag"] for r in setup.records("started")] == ["running"]
    assert setup.dead_letters(expected=1, timeout=0.5) == []
    app.close()


@pytest.mark.timeout(120)
def test_warm_shutdowns_give_a_running_task_back_without_counting_it(setup: Setup):
    """task_max_redeliveries = 1 and two warm shutdowns while a long task runs: it is started
    again each time and never dead-lettered."""
    app = setup.app()
    app.send_task("tasks.slow", args=[60, "long"])
    for turn in range(1, 3):
        with setup.worker("-P", "prefork", "-c", "1", name=f"w{turn}") as proc:
            assert len(setup.wait_records("started", turn)) == turn
            os.killpg(proc.pid, signal.SIGTERM)
            assert proc.wait(30) == 0
    with setup.worker("-P", "prefork", "-c", "1", name="last"):
        assert len(setup.wait_records("started", 3)) == 3
    assert setup.dead_letters(expected=1, timeout=1) == []
    assert setup.records("done") == []
    app.close()


def test_a_redelivered_task_whose_result_backend_cannot_answer_runs_and_the_log_says_why(caplog):
    from types import SimpleNamespace

    from qtui.core.exceptions import BackendError
    from qtui.workers.worker import Worker

    def unreachable(task_id: str) -> dict[str, object]:
        raise BackendError("cannot read the result of task t-1 from Redis: Connection refused")

    backend = SimpleNamespace(persistent=True, get_task_meta=unreachable)
    worker = SimpleNamespace(app=SimpleNamespace(backend=backend))
    message = SimpleNamespace(id="t-1", task="tasks.add", ignore_result=False)
    with caplog.at_level("WARNING", logger="qtui.worker"):
        assert Worker._already_done(worker, message) is False
    assert "tasks.add[t-1] was delivered again" in caplog.text
    assert "Connection refused" in caplog.text
