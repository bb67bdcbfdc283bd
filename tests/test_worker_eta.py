"""ETA and countdown: never early, exactly once, and across a worker restart on each broker."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timezone

import pytest
import redis

from qtui.workers.eta import DELAYED_KEY

from .worker_helpers import (  # noqa: F401 - fixtures
    REDIS_URL,
    Setup,
    amqp_setup,
    every_setup,
    redis_setup,
    sqlite_setup,
    wait_for,
)


@pytest.mark.timeout(90)
def test_countdown_of_2s_is_not_run_early_and_runs_once(every_setup: Setup):
    with every_setup.worker("-P", "prefork", "-c", "2"):
        app = every_setup.app()
        sent = datetime.now(timezone.utc).timestamp()
        result = app.send_task("tasks.mark", args=["later"], countdown=2)
        now = app.send_task("tasks.mark", args=["now"])
        assert now.get(timeout=20) == "now"
        assert result.get(timeout=20) == "later"
        time.sleep(2)
    runs = [r for r in every_setup.records("mark") if r["tag"] == "later"]
    assert len(runs) == 1
    assert runs[0]["t"] >= sent + 2 - 0.01
    app.close()


def _stored_then_killed(setup: Setup, countdown: float) -> tuple[str, float]:
    """Send a task, let a worker put it in the broker's delayed store, then SIGKILL that worker."""
    with setup.worker("-P", "solo") as proc:
        app = setup.app()
        due = time.time() + countdown
        result = app.send_task("tasks.mark", args=["eta"], countdown=countdown)
        assert wait_for(lambda: "stored until its ETA" in proc.log_path.read_text(), 20)
        os.killpg(proc.pid, signal.SIGKILL)
        app.close()
    return result.id, due


@pytest.mark.timeout(120)
def test_a_long_eta_survives_a_worker_kill_on_redis_and_runs_once_on_time(redis_setup: Setup):
    redis_setup.conf["worker_eta_horizon"] = 1.0
    task_id, due = _stored_then_killed(redis_setup, 6)
    client = redis.Redis.from_url(REDIS_URL)
    assert client.zcard(DELAYED_KEY.format(queue=redis_setup.queue)) == 1
    with redis_setup.worker("-P", "solo", name="second"), redis_setup.worker("-P", "solo",
                                                                            name="third"):
        app = redis_setup.app()
        assert app.AsyncResult(task_id).get(timeout=30) == "eta"
        time.sleep(1.5)
        app.close()
    runs = redis_setup.records("mark")
    assert len(runs) == 1 and runs[0]["t"] >= due - 0.01
    assert client.zcard(DELAYED_KEY.format(queue=redis_setup.queue)) == 0


@pytest.mark.timeout(120)
def test_a_long_eta_survives_a_worker_kill_on_rabbitmq_and_runs_once_on_time(amqp_setup: Setup):
    amqp_setup.conf["worker_eta_horizon"] = 1.0
    task_id, due = _stored_then_killed(amqp_setup, 6)
    with amqp_setup.worker("-P", "solo", name="second"):
        app = amqp_setup.app()
        assert app.AsyncResult(task_id).get(timeout=30) == "eta"
        time.sleep(1.5)
        app.close()
    runs = amqp_setup.records("mark")
    assert len(runs) == 1 and runs[0]["t"] >= due - 0.01


@pytest.mark.timeout(120)
def test_a_long_eta_survives_a_worker_kill_on_sqlite_and_runs_once_on_time(sqlite_setup: Setup):
    """Stored as a not-before row, not held: neither the visibility timeout nor the dead
    holder's release brings it back early."""
    sqlite_setup.conf["worker_eta_horizon"] = 1.0
    sqlite_setup.conf["broker_transport_options"] = {"visibility_timeout": 2}
    task_id, due = _stored_then_killed(sqlite_setup, 6)
    with sqlite_setup.worker("-P", "solo", name="second"), \
            sqlite_setup.worker("-P", "solo", name="third"):
        app = sqlite_setup.app()
        assert app.AsyncResult(task_id).get(timeout=30) == "eta"
        time.sleep(1.5)
        app.close()
    runs = sqlite_setup.records("mark")
    assert len(runs) == 1 and runs[0]["t"] >= due - 0.01


@pytest.mark.timeout(120)
def test_a_due_task_runs_ahead_of_the_backlog_of_its_queue(every_setup: Setup):
    """Stored in the broker's delayed store, then due: it goes ahead of the tasks waiting in its
    queue, not behind them (issue 21 item 7: RabbitMQ's ladder and SQLite's not-before rows
    returned it to the tail)."""
    every_setup.conf["worker_eta_horizon"] = 1.0
    backlog = 60
    with every_setup.worker("-P", "solo") as proc:
        app = every_setup.app()
        result = app.send_task("tasks.mark", args=["eta"], countdown=3)
        assert wait_for(lambda: "stored until its ETA" in proc.log_path.read_text(), 20)
        for i in range(backlog):
            app.send_task("tasks.slow", args=[0.1, i])
        assert result.get(timeout=60) == "eta"
        ran_at = every_setup.records("mark")[0]["t"]
        done = every_setup.wait_records("done", backlog, timeout=60)
        app.close()
    assert len(done) == backlog
    # 60 tasks of 0.1 s take 6 s; due after 3 s, the ETA task runs with most of them still
    # waiting (behind the whole backlog it would run after all of them).
    after = [r for r in done if r["t"] > ran_at]
    assert len(after) >= backlog // 3, (len(after), backlog)
