"""A message that carries an ``expiration`` (qtui's client and Celery's send one with every
``expires``) survives every way qtui's worker publishes it again: to the broker's delayed
store, to the dead-letter queue (where it must never expire), back to its queue at shutdown,
and again after its worker was lost. A copy put back carries the time left of its ``expires``
in kombu's seconds; a dead letter and a delayed copy carry none."""

from __future__ import annotations

import os
import signal
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from kombu import Connection
from kombu.message import Message

from qtui.core.protocol import JSON, expiration_left
from qtui.workers.redelivery import republish

from .worker_helpers import (  # noqa: F401 - the fixtures
    Setup,
    amqp_setup,
    redis_setup,
    sqlite_setup,
    wait_for,
)

celery = pytest.importorskip("celery")


def _client(setup: Setup, client: str) -> Any:
    if client == "qtui":
        return setup.app()
    app = celery.Celery("expiration-resend", broker=setup.broker)
    app.conf.task_default_queue = setup.queue
    return app


def _queued(setup: Setup) -> Any:
    """The one message waiting on the setup's queue, taken off it."""
    with Connection(setup.broker) as conn:
        queue = conn.SimpleQueue(setup.queue)
        try:
            message = queue.get(timeout=10)
            message.ack()
            return message
        finally:
            queue.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("client", ["qtui", "celery"])
@pytest.mark.parametrize("broker", ["redis", "sqlite", "amqp"])
def test_a_task_with_expires_due_past_the_horizon_runs_at_its_eta(
        request: pytest.FixtureRequest, broker: str, client: str) -> None:
    setup: Setup = request.getfixturevalue(f"{broker}_setup")
    setup.conf["worker_eta_horizon"] = 1.0
    with setup.worker("-P", "solo") as proc:
        app = _client(setup, client)
        app.send_task("tasks.mark", args=["eta"], countdown=3, expires=120)
        app.close()
        marks = setup.wait_records("mark", 1, timeout=30)
        assert ([m["tag"] for m in marks], proc.poll()) == (["eta"], None)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("broker", ["redis", "sqlite", "amqp"])
def test_a_dead_letter_of_a_message_with_expires_carries_no_expiration(
        request: pytest.FixtureRequest, broker: str) -> None:
    setup: Setup = request.getfixturevalue(f"{broker}_setup")
    with setup.worker("-P", "solo") as proc:
        app = setup.app()
        task_id = app.send_task("tasks.no_such_task", args=[1], expires=60).id
        app.close()
        dead = setup.dead_letters(1)
        assert proc.poll() is None
    assert [(m.headers["id"], m.properties.get("expiration")) for m in dead] == [(task_id, None)]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("broker", ["redis", "sqlite", "amqp"])
def test_a_held_message_with_expires_is_put_back_at_shutdown_with_the_time_left(
        request: pytest.FixtureRequest, broker: str) -> None:
    setup: Setup = request.getfixturevalue(f"{broker}_setup")
    with setup.worker("-P", "solo") as proc:
        app = setup.app()
        app.send_task("tasks.slow", args=[2, "running"])
        app.send_task("tasks.mark", args=["held"], expires=60)  # prefetched behind it
        app.close()
        assert setup.wait_records("started", 1)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
    message = _queued(setup)
    assert message.headers["task"] == "tasks.mark"
    assert 0 < float(message.properties["expiration"]) <= 60_000


@pytest.mark.timeout(120)
@pytest.mark.parametrize("broker", ["sqlite", "amqp"])
def test_a_task_with_expires_whose_worker_was_killed_runs_again(
        request: pytest.FixtureRequest, broker: str) -> None:
    setup: Setup = request.getfixturevalue(f"{broker}_setup")
    with setup.worker("-P", "solo", name="lost") as proc:
        app = setup.app()
        app.send_task("tasks.slow", args=[30, "lost"], expires=120)
        app.close()
        assert setup.wait_records("started", 1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    with setup.worker("-P", "solo", name="next") as proc:
        assert wait_for(lambda: len(setup.records("started")) == 2, 60)
        assert proc.poll() is None


def test_a_copy_may_wait_the_time_left_of_expires_and_none_once_it_is_past() -> None:
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert [expiration_left(headers, now) for headers in (
        {"expires": "2030-01-01T00:01:00+00:00"}, {"expires": "2030-01-01T00:01:00"},
        {"expires": "2029-12-31T23:59:00+00:00"}, {"expires": None}, {"expires": "soon"},
        {"expires": 60}, {}, None)] == [60.0, 60.0, None, None, None, None, None, None]


def test_a_copy_the_worker_publishes_again_keeps_the_properties_its_sender_gave_it() -> None:
    """``user_id`` too: the worker connects as the senders of what it consumes (RabbitMQ
    refuses a ``user_id`` that is not the connection's user; the console's move drops it)."""
    sent: list[dict[str, Any]] = []
    producer = SimpleNamespace(publish=lambda body, **kwargs: sent.append(kwargs))
    message = Message(body=b"[]", headers={"task": "t", "id": "i"}, content_type=JSON,
                      content_encoding="utf-8", delivery_info={"priority": 4},
                      properties={"correlation_id": "i", "user_id": "guest", "app_id": "a",
                                  "expiration": "60000"})
    republish(producer, message, "q")  # type: ignore[arg-type]  # records what it is given
    (kwargs,) = sent
    assert {k: kwargs.get(k) for k in ("correlation_id", "user_id", "app_id", "priority",
                                       "expiration")} == {
        "correlation_id": "i", "user_id": "guest", "app_id": "a", "priority": 4,
        "expiration": None}
