"""A task longer than RabbitMQ's consumer_timeout, on a node the module starts for itself
(consumer_timeout 2 s; the shared node keeps its settings)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from kombu import Connection, Exchange, Queue

from tests.rabbit_node import rabbit_node

from .worker_helpers import REDIS_URL, make_setup, wait_for

CONSUMER_TIMEOUT_MS = 2000


@pytest.fixture(scope="module")
def timeout_node() -> Iterator[str]:
    if shutil.which("rabbitmq-server") is None:
        pytest.skip("rabbitmq-server is not installed")
    with rabbit_node(CONSUMER_TIMEOUT_MS) as node:
        yield node.url


@pytest.mark.timeout(120)
def test_a_task_past_the_consumer_timeout_runs_once_and_the_worker_stays_up(
        tmp_path, unique, timeout_node):
    setup = make_setup(tmp_path, f"qw-{unique}", timeout_node, REDIS_URL)
    try:
        with setup.worker("-P", "threads", "-c", "2") as worker:
            app = setup.app()
            app.send_task("tasks.slow", args=[5, "long"])
            app.close()
            assert wait_for(lambda: setup.records("done"), 40), \
                worker.log_path.read_text()[-3000:]
            log = worker.log_path.read_text()
            assert "consumer timeout" in log, log[-3000:]
            app = setup.app()
            app.send_task("tasks.mark", args=["after"])
            app.close()
            assert wait_for(lambda: setup.records("mark"), 20), \
                worker.log_path.read_text()[-3000:]
            assert worker.poll() is None
        assert [r["tag"] for r in setup.records("started")] == ["long"]
        with Connection(timeout_node) as conn:  # the redelivered copy was acked, not left behind
            ok = Queue(setup.queue, Exchange(setup.queue), setup.queue)(
                conn.default_channel).queue_declare(passive=True)
            assert ok.message_count == 0
    finally:
        setup.cleanup()


def test_the_worker_warns_at_start_about_tasks_longer_than_the_consumer_timeout(
        tmp_path, unique, timeout_node):
    setup = make_setup(tmp_path, f"qw-{unique}", timeout_node, REDIS_URL,
                       broker_consumer_timeout=CONSUMER_TIMEOUT_MS / 1000,
                       task_annotations={"tasks.spin": {"time_limit": 60}})
    try:
        with setup.worker("-P", "solo") as worker:
            assert wait_for(lambda: "Task tasks.spin may run 60s" in worker.log_path.read_text(),
                            10), worker.log_path.read_text()[-3000:]
            assert "Task tasks.add may run" not in worker.log_path.read_text()
    finally:
        setup.cleanup()
