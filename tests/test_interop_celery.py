"""Interop with the real Celery package, both ways, on real Redis and RabbitMQ.

Celery's first-steps tutorial, client half, written with qtui: a real Celery worker runs the
tasks qtui sends, and qtui's AsyncResult reads what it stored. And messages a real Celery client
sends parse with qtui's protocol module into the same task.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from kombu import Connection

from qtui.core import App, states
from qtui.core.protocol import parse

from .processes import celery_worker, write_module
from .services import AMQP_HOST, AMQP_PORT, REDIS_HOST, REDIS_PORT, need

CELERY_TASKS = """
import os
import time
from celery import Celery

app = Celery("tasks", broker=os.environ["QTUI_TEST_BROKER"],
             backend=os.environ["QTUI_TEST_BACKEND"])
app.conf.task_default_queue = os.environ["QTUI_TEST_QUEUE"]

@app.task
def add(x, y):
    return x + y

@app.task
def fail(message):
    raise ValueError(message)

@app.task
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}

@app.task
def started_at():
    return time.time()
"""

BROKERS = {
    "redis": (f"redis://{REDIS_HOST}:{REDIS_PORT}/0", f"redis://{REDIS_HOST}:{REDIS_PORT}/0"),
    "rabbitmq": (f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}//", "rpc://"),
}


@pytest.fixture(scope="module", params=sorted(BROKERS))
def cluster(request, tmp_path_factory):
    """A real Celery worker on its own queue, and a qtui client app pointed at it."""
    if request.param == "redis":
        need("Redis", REDIS_HOST, REDIS_PORT)
    else:
        need("RabbitMQ", AMQP_HOST, AMQP_PORT)
    broker, backend = BROKERS[request.param]
    queue = f"interop-{uuid.uuid4().hex[:8]}"
    directory = tmp_path_factory.mktemp("celery")
    write_module(directory, "tasks", CELERY_TASKS)
    env = {"QTUI_TEST_BROKER": broker, "QTUI_TEST_BACKEND": backend, "QTUI_TEST_QUEUE": queue}
    import os
    os.environ.update(env)
    try:
        with celery_worker(directory, "tasks", queue):
            app = App("tasks", broker=broker, backend=backend, task_default_queue=queue)
            yield app
            app.close()
    finally:
        for key in env:
            os.environ.pop(key, None)
        with Connection(broker) as conn:
            try:
                conn.default_channel.queue_delete(queue)
            except Exception:
                pass


@pytest.fixture
def add(cluster):
    @cluster.task(name="tasks.add")
    def add(x, y):
        return x + y
    return add


@pytest.mark.timeout(120)
def test_tutorial_add_delay_then_get(cluster, add):
    result = add.delay(4, 4)
    assert result.get(timeout=20) == 8
    assert result.ready() and result.successful() and result.state == states.SUCCESS


@pytest.mark.timeout(120)
def test_tutorial_failing_task_with_propagate_false_and_traceback(cluster):
    result = cluster.send_task("tasks.fail", args=["bad input"])
    exc = result.get(timeout=20, propagate=False)
    assert isinstance(exc, ValueError) and exc.args == ("bad input",)
    assert result.failed()
    assert "ValueError: bad input" in result.traceback
    with pytest.raises(ValueError, match="bad input"):
        result.get(timeout=5)


@pytest.mark.timeout(120)
def test_arguments_survive_the_trip(cluster):
    result = cluster.send_task("tasks.echo", args=[1, "two", [3]], kwargs={"k": {"n": None}})
    assert result.get(timeout=20) == {"args": [1, "two", [3]], "kwargs": {"k": {"n": None}}}


@pytest.mark.timeout(120)
def test_countdown_is_honoured_by_a_celery_worker(cluster):
    sent = time.time()
    result = cluster.send_task("tasks.started_at", countdown=2)
    assert result.get(timeout=30) - sent >= 1.5


@pytest.mark.timeout(120)
def test_revoke_from_qtui_stops_a_celery_worker_running_the_task(cluster, add):
    result = add.apply_async((1, 2), countdown=4)
    result.revoke()
    exc = result.get(timeout=30, propagate=False)
    assert result.state == states.REVOKED
    assert isinstance(exc, Exception)


@pytest.mark.timeout(60)
def test_messages_from_a_real_celery_client_parse_to_the_same_task(redis_url):
    import celery

    queue = f"from-celery-{uuid.uuid4().hex[:8]}"
    sender = celery.Celery("sender", broker=redis_url, set_as_current=False)
    sender.conf.task_default_queue = queue
    eta = datetime.now(timezone.utc) + timedelta(hours=1)
    sent = sender.send_task("tasks.mul", args=[6, 7], kwargs={"scale": 2}, eta=eta,
                            expires=eta + timedelta(hours=1), priority=5, time_limit=30,
                            soft_time_limit=20, headers={"tenant": "acme"})
    with Connection(redis_url) as conn:
        message = conn.SimpleQueue(queue).get(timeout=5)
        message.ack()
        conn.default_channel.queue_delete(queue)
    got = parse(message.decode(), message.headers, message.properties)
    assert (got.id, got.task, got.args, got.kwargs) == (sent.id, "tasks.mul", (6, 7), {"scale": 2})
    assert abs(got.eta - eta) < timedelta(milliseconds=1)
    assert (got.time_limit, got.soft_time_limit, got.priority) == (30, 20, 5)
    assert got.headers.get("tenant") == "acme"
    sender.close()


@pytest.mark.timeout(120)
def test_tutorial_configuration_and_a_route_to_the_workers_queue(cluster, tmp_path, monkeypatch):
    """conf.update, config_from_object and a task_routes entry that lands the task on the queue
    the worker consumes, while the default queue points nowhere."""
    worker_queue = cluster.conf.task_default_queue
    config_module = f"tutorialconfig_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{config_module}.py").write_text(
        f"task_routes = {{'tasks.add': {{'queue': {worker_queue!r}}}}}\n"
        "result_expires = 600\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = App("tasks", broker=cluster.conf.broker_url, backend=cluster.conf.result_backend)
    app.conf.update(task_default_queue=f"nobody-listens-{uuid.uuid4().hex[:8]}",
                    task_serializer="json", accept_content=["json"])
    app.config_from_object(config_module)
    try:
        assert app.send_task("tasks.add", args=[2, 3]).get(timeout=20) == 5
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(app.conf.task_default_queue)
        app.close()
