"""The worker's core path with real processes: consume, run, ack late, store results -- on each
pool, on Redis and RabbitMQ -- and bad input that is dead-lettered while the worker goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from kombu import Connection, Exchange, Producer, Queue

from qtui.core import states
from qtui.core.exceptions import NotRegistered, TaskRejectedError
from qtui.workers.deadletter import DEAD_REASON_HEADER
from qtui.workers.redelivery import DELIVERIES_HEADER

from .worker_helpers import Setup, every_setup, redis_setup  # noqa: F401 - fixtures

POOLS = ["prefork", "threads", "solo"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("pool", POOLS)
def test_tasks_run_and_results_are_stored_on_each_pool_and_broker(every_setup: Setup, pool):
    with every_setup.worker("-P", pool, "-c", "2"):
        app = every_setup.app()
        results = [app.send_task("tasks.add", args=[i, i]) for i in range(20)]
        assert [r.get(timeout=30) for r in results] == [2 * i for i in range(20)]
        failed = app.send_task("tasks.fail", args=["bad input"])
        exc = failed.get(timeout=30, propagate=False)
        assert isinstance(exc, ValueError) and exc.args == ("bad input",)
        assert failed.state == states.FAILURE
        assert "ValueError: bad input" in failed.traceback
        app.close()


@pytest.mark.timeout(60)
def test_run_worker_help_lists_every_option():
    out = subprocess.run([sys.executable, "-m", "qtui.tui.cli", "run-worker", "--help"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    for option in ("--loglevel", "--concurrency", "--pool", "--queues", "--hostname",
                   "--prefetch-multiplier", "--max-tasks-per-child", "--time-limit",
                   "--soft-time-limit", "--pidfile", "--logfile", "--statedb",
                   "--without-heartbeat", "--without-events"):
        assert option in out


@pytest.mark.timeout(60)
def test_banner_masks_the_broker_password(redis_setup: Setup):
    redis_setup.broker = "redis://:not-the-password@127.0.0.1:6379/0"
    with redis_setup.worker("-P", "solo") as proc:
        log = proc.log_path.read_text()
    assert "not-the-password" not in log
    assert "redis://:**@127.0.0.1:6379/0" in log
    assert "tasks.add" in log


@pytest.mark.timeout(90)
def test_a_killed_prefork_child_is_replaced_and_its_task_runs_again(redis_setup: Setup):
    with redis_setup.worker("-P", "prefork", "-c", "2"):
        app = redis_setup.app()
        result = app.send_task("tasks.die_once", args=["x"])
        assert result.get(timeout=30) == "x"
        runs = redis_setup.records("die_once")
        assert len(runs) == 2 and runs[0]["pid"] != runs[1]["pid"]
        # the pool is whole again: two tasks run side by side
        results = [app.send_task("tasks.slow", args=[0.5, i]) for i in range(2)]
        assert [r.get(timeout=30) for r in results] == [0, 1]
        app.close()


@pytest.mark.timeout(90)
def test_sigkill_of_a_child_mid_task_redelivers_it_to_success(redis_setup: Setup):
    with redis_setup.worker("-P", "prefork", "-c", "1"):
        app = redis_setup.app()
        result = app.send_task("tasks.slow", args=[3, "long"])
        started = redis_setup.wait_records("started", 1)
        os.kill(started[0]["pid"], signal.SIGKILL)
        assert result.get(timeout=30) == "long"
        assert len(redis_setup.records("started")) == 2
        assert len(redis_setup.records("done")) == 1
        app.close()


@pytest.mark.timeout(90)
def test_a_poison_message_is_dead_lettered_after_max_redeliveries(redis_setup: Setup):
    with redis_setup.worker("-P", "prefork", "-c", "1"):
        app = redis_setup.app()
        result = app.send_task("tasks.die_always")
        exc = result.get(timeout=60, propagate=False)
        assert result.state == states.FAILURE
        assert type(exc).__name__ == "WorkerLostError"
        dead = redis_setup.dead_letters()
        assert len(dead) == 1
        assert "delivered 3 times" in dead[0].headers[DEAD_REASON_HEADER]
        assert dead[0].headers[DELIVERIES_HEADER] == 3
        assert dead[0].headers["id"] == result.id
        assert len(redis_setup.records("die_always")) == 3
        # and the worker goes on
        assert app.send_task("tasks.add", args=[1, 2]).get(timeout=30) == 3
        app.close()


def _publish_raw(setup: Setup, body, headers=None, content_type="application/json",
                 **properties) -> None:
    with Connection(setup.broker) as conn:
        queue = Queue(setup.queue, Exchange(setup.queue), routing_key=setup.queue)
        Producer(conn.default_channel).publish(
            body, exchange=setup.queue, routing_key=setup.queue, headers=headers or {},
            content_type=content_type, content_encoding="utf-8", declare=[queue], **properties)


def _task_headers(task_id: str, name: str = "tasks.add") -> dict:
    return {"lang": "py", "task": name, "id": task_id, "retries": 0, "root_id": task_id,
            "timelimit": [None, None]}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_malformed_messages_interleaved_with_valid_ones_are_dead_lettered(redis_setup: Setup,
                                                                         pool):
    app = redis_setup.app()
    good = []
    bad = {
        "not-json": ("{not json", _task_headers("bad-json"), "application/json"),
        "body-not-a-list": ('{"a": 1}', _task_headers("bad-body"), "application/json"),
        "no-task-header": ("[[1, 2], {}, {}]", {"id": "bad-noname"}, "application/json"),
        "pickle": (b"\x80\x04K\x01.", _task_headers("bad-pickle"),
                   "application/x-python-serialize"),
        "unknown-task": ("[[1, 2], {}, {}]", _task_headers("bad-unknown", "tasks.nope"),
                         "application/json"),
        "args-not-a-list": ('[7, {}, {}]', _task_headers("bad-args"), "application/json"),
    }
    for i, (body, headers, content_type) in enumerate(bad.values()):
        good.append(app.send_task("tasks.add", args=[i, 1]))
        _publish_raw(redis_setup, body, headers, content_type)
    good.append(app.send_task("tasks.add", args=[100, 1]))
    with redis_setup.worker("-P", pool, "-c", "2"):
        assert [r.get(timeout=30) for r in good] == [i + 1 for i in range(len(bad))] + [101]
        dead = redis_setup.dead_letters(expected=len(bad))
    reasons = {m.headers.get("id"): m.headers[DEAD_REASON_HEADER] for m in dead}
    assert len(dead) == len(bad)
    assert "cannot decode" in reasons["bad-json"]
    assert "body must be [args, kwargs, embed]" in reasons["bad-body"]
    assert "not a task message" in reasons["bad-noname"]
    assert "refused a message of content type" in reasons["bad-pickle"]
    assert "unknown task 'tasks.nope'" in reasons["bad-unknown"]
    assert "args must be a list" in reasons["bad-args"]
    rejected = app.AsyncResult("bad-pickle")
    assert rejected.state == states.REJECTED
    assert isinstance(rejected.get(propagate=False), TaskRejectedError)
    unknown = app.AsyncResult("bad-unknown")
    assert unknown.state == states.FAILURE
    assert isinstance(unknown.get(propagate=False), NotRegistered)
    app.close()


@pytest.mark.timeout(60)
def test_an_unserializable_result_is_a_failure_and_a_dead_letter(redis_setup: Setup):
    with redis_setup.worker("-P", "solo"):
        app = redis_setup.app()
        result = app.send_task("tasks.unserializable")
        exc = result.get(timeout=30, propagate=False)
        assert result.state == states.FAILURE
        assert "cannot be serialized" in str(exc)
        dead = redis_setup.dead_letters()
        assert "unserializable result" in dead[0].headers[DEAD_REASON_HEADER]
        assert app.send_task("tasks.add", args=[2, 2]).get(timeout=30) == 4
        app.close()


@pytest.mark.timeout(120)
def test_a_threads_worker_runs_as_many_tasks_at_once_as_it_has_threads_while_tasks_wait(
        redis_setup: Setup):
    """The worker asks the pool's free slots once per batch: never more tasks than threads at
    once, and no thread left idle while tasks wait (each task counts the tasks running halfway
    through its sleep; all but the last few to start see every thread busy)."""
    app = redis_setup.app()
    results = [app.send_task("tasks.overlap", args=[0.6]) for _ in range(15)]
    with redis_setup.worker("-P", "threads", "-c", "3"):
        seen = [r.get(timeout=60) for r in results]
    app.close()
    assert max(seen) == 3, seen
    assert seen.count(3) >= len(seen) - 2, seen


@pytest.mark.timeout(120)
def test_typed_json_values_kombu_cannot_build_are_dead_lettered_and_the_worker_goes_on(
        every_setup: Setup):
    """``{"__type__": [], "__value__": null}`` is JSON that kombu's decoder fails on with a
    TypeError: in the body, the message is dead-lettered on every broker; in a header, on the
    brokers whose envelope is JSON (Redis, SQLite), where it killed the worker, the message
    is dead-lettered too (AMQP's headers are a table, not JSON: there it is a plain header)."""
    crafted = {"__type__": [], "__value__": None}
    app = every_setup.app()
    _publish_raw(every_setup, '[[{"__type__": "bytes", "__value__": 1}], {}, {}]',
                 _task_headers("bad-body"))
    _publish_raw(every_setup, "[[20, 22], {}, {}]", {**_task_headers("crafted-header"),
                                                     "x": crafted})
    good = app.send_task("tasks.add", args=[1, 2])
    envelope_is_json = not every_setup.broker.startswith("amqp")
    with every_setup.worker("-P", "solo"):
        assert good.get(timeout=30) == 3
        dead = every_setup.dead_letters(expected=1 + envelope_is_json)
    app.close()
    reasons = sorted(m.headers[DEAD_REASON_HEADER] for m in dead)
    assert len(reasons) == 1 + envelope_is_json
    assert all("typed JSON value {'__type__': " in reason for reason in reasons), reasons
