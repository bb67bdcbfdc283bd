"""`qtui exporter` against real clusters: a qtui worker and a Celery worker on Redis, and a qtui
worker on RabbitMQ. Counted tasks are sent, /metrics is scraped over HTTP and parsed with
prometheus_client's own parser, and the figures must be exact.

Redis database 10 is this file's, so its queue listing sees only its own queues.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families

from qtui.core import App

from .processes import celery_worker, running, write_module
from .services import AMQP_HOST, AMQP_PORT, REDIS_HOST, REDIS_PORT, need
from .test_interop_celery import CELERY_TASKS
from .worker_helpers import Setup, hostname_of, make_setup, wait_for

REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/10"
AMQP_URL = f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}//"
HOST = socket.gethostname()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Exporter:
    port: int
    process: Any

    @property
    def output(self) -> str:
        return Path(self.process.log_path).read_text()

    def text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return str(r.read().decode("utf-8"))

    def scrape(self) -> Samples:
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(self.text())
                for s in family.samples}

    def value(self, metric: str, /, **labels: str) -> float | None:
        return self.scrape().get((metric, frozenset(labels.items())))

    def until(self, metric: str, expected: float, /, timeout: float = 40.0,
              **labels: str) -> float:
        """The sample once it equals ``expected`` (or what it is at the timeout)."""
        wait_for(lambda: self.value(metric, **labels) == expected, timeout, interval=0.5)
        found = self.value(metric, **labels)
        assert found == expected, (metric, labels, found)
        return found


@pytest.fixture
def exporter_for(tmp_path) -> Iterator[Any]:
    """Starts ``qtui -b BROKER exporter`` on a free port; stopped when the test ends."""
    from contextlib import ExitStack
    stack = ExitStack()

    def start(broker: str) -> Exporter:
        port = free_port()
        argv = [sys.executable, "-m", "qtui.tui.cli", "-b", broker, "exporter",
                "--port", str(port), "--poll-interval", "1"]
        process = stack.enter_context(running(argv, tmp_path, ready="serving http://"))
        return Exporter(port, process)
    with stack:
        yield start


@dataclass
class RedisCluster:
    qtui: Setup
    qtui_worker: Any
    celery_queue: str
    idle_queue: str
    client: App


@pytest.fixture
def redis_cluster(tmp_path, monkeypatch) -> Iterator[RedisCluster]:
    """A qtui worker (threads, 2 slots) and a Celery worker (solo, events on), each on a queue
    of its own, on Redis database 10; a client that sends task-sent events."""
    need("Redis", REDIS_HOST, REDIS_PORT)
    token = uuid.uuid4().hex[:8]
    qtui_dir, celery_dir = tmp_path / "qtui", tmp_path / "celery"
    qtui_dir.mkdir()
    celery_dir.mkdir()
    setup = make_setup(qtui_dir, f"exq-{token}", REDIS_URL, REDIS_URL)
    celery_queue, idle_queue = f"exc-{token}", f"exidle-{token}"
    write_module(celery_dir, "tasks", CELERY_TASKS)
    monkeypatch.setenv("QTUI_TEST_BROKER", REDIS_URL)
    monkeypatch.setenv("QTUI_TEST_BACKEND", REDIS_URL)
    monkeypatch.setenv("QTUI_TEST_QUEUE", celery_queue)
    client = App("client", broker=REDIS_URL, backend=REDIS_URL, task_send_sent_event=True)
    try:
        with setup.worker("-P", "threads", "-c", "2") as worker, \
                celery_worker(celery_dir, "tasks", celery_queue, extra=["-E"]):
            yield RedisCluster(setup, worker, celery_queue, idle_queue, client)
    finally:
        client.close()
        with Connection(REDIS_URL) as conn:
            client_redis = conn.default_channel.client
            for pattern in (f"*{token}*",):
                for key in client_redis.scan_iter(pattern):
                    client_redis.delete(key)
        setup.cleanup()


def send(client: App, name: str, queue: str, count: int, **options: Any) -> list[Any]:
    return [client.send_task(name, args=[1, 2] if name == "tasks.add" else ["boom"],
                             queue=queue, **options) for _ in range(count)]


@pytest.mark.redis
@pytest.mark.timeout(240)
def test_redis_counts_tasks_of_qtui_and_celery_workers_exactly(redis_cluster, exporter_for):
    cluster = redis_cluster
    exporter = exporter_for(REDIS_URL)
    qtui_host, celery_host = hostname_of(cluster.qtui), f"celery-{cluster.celery_queue}@{HOST}"
    exporter.until("celery_worker_up", 1.0, hostname=qtui_host)
    exporter.until("celery_worker_up", 1.0, hostname=celery_host)

    plan = [(cluster.qtui.queue, qtui_host, 5, 3), (cluster.celery_queue, celery_host, 4, 2)]
    results = []
    for queue, _, ok, bad in plan:
        results += send(cluster.client, "tasks.add", queue, ok)
        results += send(cluster.client, "tasks.fail", queue, bad)
    for result in results:
        result.get(timeout=30, propagate=False)

    for queue, host, ok, bad in plan:
        add = {"name": "tasks.add", "hostname": host, "queue_name": queue}
        fail = {"name": "tasks.fail", "hostname": host, "queue_name": queue}
        exporter.until("celery_task_succeeded_total", ok, **add)
        exporter.until("celery_task_failed_total", bad, exception="ValueError", **fail)
        samples = exporter.scrape()

        def value(name: str, labels: dict[str, str]) -> float | None:
            return samples.get((name, frozenset(labels.items())))
        assert value("celery_task_received_total", add) == ok
        assert value("celery_task_started_total", add) == ok
        assert value("celery_task_received_total", fail) == bad
        assert value("celery_task_started_total", fail) == bad
        assert value("celery_task_runtime_count", add) == ok
        assert value("celery_task_runtime_bucket", {**add, "le": "+Inf"}) == ok
        assert value("celery_task_succeeded_total", fail) == 0  # started at 0, as celery-exporter
        assert value("celery_task_failed_total", {**add, "exception": ""}) == 0
        # task-sent comes from the client, counted under its host (not its per-process name).
        sent = {"hostname": HOST, "queue_name": queue}
        assert value("celery_task_sent_total", {"name": "tasks.add", **sent}) == ok
        assert value("celery_task_sent_total", {"name": "tasks.fail", **sent}) == bad
    assert exporter.value("qtui_exporter_bad_events_total") == 0


@pytest.mark.redis
@pytest.mark.timeout(240)
def test_redis_queue_gauges_and_worker_down_after_heartbeats_stop(redis_cluster, exporter_for):
    cluster = redis_cluster
    exporter = exporter_for(REDIS_URL)
    qtui_queue, idle = cluster.qtui.queue, cluster.idle_queue
    qtui_host, celery_host = hostname_of(cluster.qtui), f"celery-{cluster.celery_queue}@{HOST}"
    exporter.until("celery_worker_up", 1.0, hostname=qtui_host)
    exporter.until("celery_worker_up", 1.0, hostname=celery_host)

    send(cluster.client, "tasks.add", idle, 7)                       # nobody consumes it
    with Connection(REDIS_URL) as conn:                              # two dead letters
        dead = conn.SimpleQueue(f"{idle}.dead")
        dead.put({"not": "a task"})
        dead.put({"not": "a task"})
        dead.close()
    send(cluster.client, "tasks.mark", qtui_queue, 1, countdown=600)  # held in the broker

    exporter.until("celery_queue_length", 7, queue_name=idle)
    exporter.until("qtui_queue_dead_letters", 2, queue_name=idle)
    exporter.until("qtui_queue_scheduled", 1, queue_name=qtui_queue)
    exporter.until("celery_active_worker_count", 1, queue_name=qtui_queue)
    exporter.until("celery_active_process_count", 2, queue_name=qtui_queue)
    exporter.until("celery_active_worker_count", 1, queue_name=cluster.celery_queue)
    exporter.until("celery_active_worker_count", 0, queue_name=idle)
    samples = exporter.scrape()
    assert ("celery_queue_length", frozenset({("queue_name", f"{idle}.dead")})) not in samples
    # Dated by its publish-time header (qtui's client); an empty queue has waited for nothing.
    age = samples.get(("qtui_queue_oldest_message_age_seconds",
                       frozenset({("queue_name", idle)})))
    assert age is not None and age >= 0
    assert exporter.value("qtui_queue_oldest_message_age_seconds", queue_name=qtui_queue) == 0
    assert exporter.value("celery_worker_last_heartbeat_timestamp", hostname=qtui_host) > 0
    assert exporter.value("qtui_exporter_queues_polled_timestamp") > 0

    # SIGKILL: no worker-offline is sent, so only the heartbeats stopping tell.
    os.killpg(cluster.qtui_worker.pid, signal.SIGKILL)
    exporter.until("celery_worker_up", 0.0, timeout=30, hostname=qtui_host)
    assert exporter.value("celery_worker_tasks_active", hostname=qtui_host) == 0
    assert exporter.value("celery_worker_up", hostname=celery_host) == 1


@pytest.fixture
def rabbit_setup(tmp_path) -> Iterator[Setup]:
    need("RabbitMQ", AMQP_HOST, AMQP_PORT)
    setup = make_setup(tmp_path, f"exr-{uuid.uuid4().hex[:8]}", AMQP_URL, "rpc://")
    yield setup
    setup.cleanup()


@pytest.mark.rabbitmq
@pytest.mark.timeout(180)
def test_rabbitmq_counts_tasks_and_queue_consumers(rabbit_setup, exporter_for):
    setup = rabbit_setup
    exporter = exporter_for(AMQP_URL)
    host = hostname_of(setup)
    client = setup.app(task_send_sent_event=True)
    try:
        with setup.worker("-P", "threads", "-c", "2"):
            exporter.until("celery_worker_up", 1.0, hostname=host)
            results = send(client, "tasks.add", setup.queue, 3) \
                + send(client, "tasks.fail", setup.queue, 2)
            for result in results:
                result.get(timeout=30, propagate=False)
            labels = {"hostname": host, "queue_name": setup.queue}
            exporter.until("celery_task_succeeded_total", 3, name="tasks.add", **labels)
            exporter.until("celery_task_failed_total", 2, name="tasks.fail",
                           exception="ValueError", **labels)
            exporter.until("celery_task_runtime_count", 3, name="tasks.add", **labels)
            exporter.until("celery_active_consumer_count", 1, queue_name=setup.queue)
            exporter.until("celery_queue_length", 0, queue_name=setup.queue)
            # AMQP cannot look at a waiting message: only an empty queue's age is known.
            assert exporter.value("qtui_exporter_queues_polled_timestamp") > 0
            assert exporter.value("qtui_queue_oldest_message_age_seconds",
                                  queue_name=setup.queue) == 0
            text = exporter.text()
    finally:
        client.close()
    assert "guest:guest" not in text and "guest:guest" not in exporter.output
    assert f"serving http://127.0.0.1:{exporter.port}/metrics" in exporter.output


def test_an_unreachable_broker_leaves_the_queue_poll_undated_not_the_exporter_down():
    from prometheus_client import generate_latest

    from qtui.tui.exporter import Exporter as QtuiExporter

    exporter = QtuiExporter(App("down", broker="redis://127.0.0.1:1/0"))
    exporter.poll_once()
    families = {family.name: family for family in text_string_to_metric_families(
        generate_latest(exporter.registry).decode())}
    assert families["qtui_exporter_queues_polled_timestamp"].samples == []
    assert families["celery_queue_length"].samples == []


def test_without_prometheus_client_the_command_says_what_to_install(monkeypatch, capsys):
    from qtui.tui.cli import main

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    assert main(["-b", "memory://", "exporter"]) == 1
    assert "pip install 'qtui[exporter]'" in capsys.readouterr().err


#: Redis database 12: the paused-gauge test's (its queue and pause are removed after it); not
#: 2, which test_console_peek.py flushes.
PAUSE_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/12"


def test_the_paused_gauge_reads_1_after_qtui_pause_and_0_after_qtui_resume(exporter_for,
                                                                          capsys):
    from qtui.core.queues import inspector_for
    from qtui.tui.cli import main

    need("Redis", REDIS_HOST, REDIS_PORT)
    queue = f"expause-{uuid.uuid4().hex[:8]}"
    client = App("client", broker=PAUSE_URL)
    try:
        client.send_task("tasks.add", args=[1, 2], queue=queue)  # the broker lists it now
        exporter = exporter_for(PAUSE_URL)
        exporter.until("qtui_queue_paused", 0, queue_name=queue)
        assert main(["-b", PAUSE_URL, "pause", queue, "-t", "0.2"]) == 0
        exporter.until("qtui_queue_paused", 1, queue_name=queue)
        assert main(["-b", PAUSE_URL, "resume", queue, "-t", "0.2"]) == 0
        exporter.until("qtui_queue_paused", 0, queue_name=queue)
    finally:
        with inspector_for(client) as inspector:
            inspector.resume(queue)
            inspector.purge(queue)
        with Connection(PAUSE_URL) as conn:  # kombu's record that the queue was bound
            conn.default_channel.client.delete(f"_kombu.binding.{queue}",
                                               f"_kombu.binding_permanent.{queue}")
        client.close()


def test_pauses_that_cannot_be_read_leave_the_paused_gauges_as_they_were(monkeypatch):
    """RabbitMQ: the pause stream readable, then not (deleted between its declare and its
    read: 404, as 403 for a user without read permission): the depths go on, and the
    paused queue is not reported resumed."""
    from qtui.core.brokers.amqp import pauses as amqp_pauses
    from qtui.core.brokers.amqp.queues import AmqpQueues
    from qtui.core.pauses import Pause
    from qtui.tui.exporter import Exporter as QtuiExporter

    need("RabbitMQ", AMQP_HOST, AMQP_PORT)
    url = f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}//"
    stream = f"expause-stream-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(AmqpQueues, "pause_stream", stream)
    with Connection(url) as conn:
        pauses = amqp_pauses.PauseStream(conn, stream)
        try:
            pauses.change(lambda found: {"held": Pause("held", 0.0, "me")})
            exporter = QtuiExporter(App("exporter", broker=url))
            exporter.poll_once()
            assert list(exporter.poll_result.paused) == ["held"]
            first = exporter.poll_result.at
            monkeypatch.setattr(AmqpQueues, "pause_stream", f"{stream}-gone")
            monkeypatch.setattr(amqp_pauses, "queue_exists", lambda connection, name: True)
            exporter.poll_once()
            assert exporter.poll_result.at != first  # the poll answered
            assert list(exporter.poll_result.paused) == ["held"]
        finally:
            pauses.delete()
