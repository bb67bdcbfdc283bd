"""Compressed task messages the worker sends again -- to the delayed store, back to their queue
at shutdown, again after their worker died, to the dead-letter queue -- still run: kombu hands
the worker the body decompressed, so it goes out plain, without the ``compression`` header.
And a body above ``worker_max_body_size`` (once decompressed) is dead-lettered as it came."""

from __future__ import annotations

import bz2
import os
import signal

import pytest
from kombu import Connection, Exchange, Producer, Queue

from qtui.core.protocol import COMPRESSION_HEADER
from qtui.core.queues import inspector_for

from .worker_helpers import (  # noqa: F401 - fixtures
    Setup,
    amqp_setup,
    every_setup,
    redis_setup,
    sqlite_setup,
    wait_for,
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("compression", ["zlib", "bzip2"])
def test_a_compressed_task_beyond_the_eta_horizon_runs_when_due(every_setup: Setup, compression):
    every_setup.conf["worker_eta_horizon"] = 0.0  # every countdown goes to the delayed store
    app = every_setup.app()
    with every_setup.worker("-P", "solo") as proc:
        result = app.send_task("tasks.add", args=[2, 3], countdown=2, compression=compression)
        assert result.get(timeout=40) == 5, proc.log_path.read_text()[-3000:]
        assert "Rejected" not in proc.log_path.read_text()
    app.close()


@pytest.fixture(params=["redis", "sqlite", "amqp"])
def setup(request) -> Setup:
    return request.getfixturevalue(f"{request.param}_setup")


@pytest.mark.timeout(120)
def test_compressed_tasks_put_back_at_a_warm_shutdown_run_in_the_next_worker(setup: Setup):
    app = setup.app()
    with setup.worker("-P", "threads", "-c", "1") as proc:
        app.send_task("tasks.slow", args=[2, "running"])
        setup.wait_records("started", 1)
        results = [app.send_task("tasks.add", args=[i, i], compression="zlib") for i in range(3)]
        # prefetched while the slow task runs: the shutdown puts them back
        assert wait_for(lambda: proc.log_path.read_text().count("Task tasks.add[") == 3)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    with setup.worker("-P", "solo", name="second") as proc:
        assert [r.get(timeout=30) for r in results] == [0, 2, 4]
        assert "Rejected" not in proc.log_path.read_text()
    app.close()


@pytest.mark.timeout(120)
def test_a_compressed_task_whose_worker_was_killed_runs_in_the_next(redis_setup: Setup):
    redis_setup.conf.update(task_acks_late=True,  # the dead worker's deliveries, back soon
                            broker_transport_options={"visibility_timeout": 2})
    app = redis_setup.app()
    result = app.send_task("tasks.slow", args=[3, "killed"], compression="zlib")
    with redis_setup.worker("-P", "solo") as proc:
        assert redis_setup.wait_records("started", 1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    with redis_setup.worker("-P", "solo", name="second") as proc:
        assert result.get(timeout=40) == "killed", proc.log_path.read_text()[-3000:]
        assert "Rejected" not in proc.log_path.read_text()
    app.close()


def _publish(setup: Setup, body: bytes, task_id: str, compression: str | None) -> None:
    """A tasks.add message with ``body`` as it goes on the wire (any kombu client can send it)."""
    headers = {"lang": "py", "task": "tasks.add", "id": task_id, "retries": 0,
               "root_id": task_id, "timelimit": [None, None]}
    if compression:
        headers[COMPRESSION_HEADER] = compression
    with Connection(setup.broker) as conn:
        queue = Queue(setup.queue, Exchange(setup.queue), routing_key=setup.queue)
        Producer(conn.default_channel).publish(
            body, exchange=setup.queue, routing_key=setup.queue, headers=headers,
            content_type="application/json", content_encoding="utf-8", declare=[queue])


def _dead_letters(setup: Setup, app, expected: int) -> list:
    """The dead letters as the broker holds them (peek reads the envelopes, bodies as sent)."""
    name = f"{setup.queue}.dead"
    with inspector_for(app) as inspector:
        assert wait_for(lambda: len(inspector.peek(name).messages) >= expected, timeout=30)
        return inspector.peek(name).messages


@pytest.mark.timeout(120)
def test_a_body_inflating_past_the_cap_is_dead_lettered_as_it_came(setup: Setup):
    """Three concatenated bzip2 streams of 100 KB of zeros each, 141 bytes sent: inflated in
    steps, stopped past the cap, the compressed bytes dead-lettered; the worker goes on."""
    setup.conf["worker_max_body_size"] = 1000
    bomb = bz2.compress(b"\0" * 100_000) * 3
    _publish(setup, bomb, "bomb", "application/x-bz2")
    app = setup.app()
    small = app.send_task("tasks.add", args=[1, 2], compression="bzip2")
    with setup.worker("-P", "solo"):
        assert small.get(timeout=30) == 3
        (letter,) = _dead_letters(setup, app, 1)
    assert letter.reason == "decompressed body exceeds 1000 bytes (worker_max_body_size)"
    assert letter.headers[COMPRESSION_HEADER] == "application/x-bz2"
    assert letter.body == bomb
    app.close()


@pytest.mark.timeout(120)
def test_a_plain_body_above_the_cap_is_dead_lettered(setup: Setup):
    setup.conf["worker_max_body_size"] = 1000
    app = setup.app()
    big = app.send_task("tasks.add", args=["x" * 2000, "y"])
    small = app.send_task("tasks.add", args=[1, 2])
    with setup.worker("-P", "solo"):
        assert small.get(timeout=30) == 3
        (letter,) = _dead_letters(setup, app, 1)
    assert letter.task_id == big.id
    assert letter.reason == "body exceeds 1000 bytes (worker_max_body_size)"
    app.close()
