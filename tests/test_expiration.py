"""Celery's ``expiration`` message property: a send with ``expires`` carries the seconds it
may wait as milliseconds (text), as Celery 5.7's ``send_task`` sets it and kombu writes it,
on every way of sending (one at a time, ``send_many`` and a group's lanes, the canvas, a
task's own ``expires``); qtui's worker runs such a message on each broker, and RabbitMQ
drops one nobody took in time, for Celery's client and qtui's alike."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from kombu import Connection, Queue

from qtui.core import App
from qtui.core.queues import inspector_for

from .test_canvas_fidelity import Side, sides  # noqa: F401 - the fixture
from .worker_helpers import Setup, amqp_setup, redis_setup, sqlite_setup  # noqa: F401

celery = pytest.importorskip("celery")

#: An ``expires`` already past: Celery sends it as expiration 0, which RabbitMQ drops at once
#: from a queue with no consumer waiting (no wait for a TTL to run out in the test).
PAST = datetime(2020, 1, 1, tzinfo=timezone.utc)


def _sent(side: Side) -> list[dict[str, Any]]:
    """The side's messages, the ``expires`` date (now plus the seconds given, a moment apart
    on the two sides) replaced by whether there is one."""
    found = side.sent(minutes=False)
    for message in found:
        message["headers"]["expires"] = message["headers"]["expires"] is not None
    return found


def _expirations(found: list[dict[str, Any]]) -> list[Any]:
    return [m["properties"].get("expiration") for m in found]


def _both(sides: dict[str, Side], send: Any) -> list[dict[str, Any]]:
    for side in sides.values():
        send(side)
    celery_sent, qtui_sent = _sent(sides["celery"]), _sent(sides["qtui"])
    assert qtui_sent == celery_sent
    return qtui_sent


@pytest.mark.timeout(30)
def test_a_send_with_expires_carries_celerys_expiration_property(
        sides: dict[str, Side]) -> None:
    sent = _both(sides, lambda s: (
        s.add.apply_async((1,), expires=60), s.add.delay(2),
        s.app.send_task("tasks.other", (3,), expires=2.5, ignore_result=False),
        s.add.s(4).set(expires=30).apply_async()))
    assert _expirations(sent) == ["60000", None, "2500", "30000"]


@pytest.mark.timeout(30)
def test_a_group_and_chain_with_expires_carry_it_on_each_message(
        sides: dict[str, Side]) -> None:
    sent = _both(sides, lambda s: (
        s.canvas.group(s.add.s(1), s.add.s(2)).apply_async(expires=60),
        s.canvas.chain(s.add.s(3), s.add.s(4)).apply_async(expires=60),
        s.canvas.chord([s.add.s(5)], s.tsum.s().set(expires=60)).apply_async()))
    assert _expirations(sent) == ["60000"] * 3 + [None]


@pytest.mark.timeout(30)
def test_send_many_and_a_group_of_a_task_with_its_own_expires_carry_it(
        sides: dict[str, Side]) -> None:
    def send(side: Side) -> None:
        task = side.app.task(name="tasks.expiring", expires=45)(_expiring)
        calls = [task.s(1), task.s(2)]
        if isinstance(side.app, App):
            side.app.send_many(calls)
        else:
            for call in calls:
                call.apply_async()
        side.canvas.group(task.s(3), task.s(4)).apply_async()

    sent = _both(sides, send)
    assert _expirations(sent) == ["45000"] * 4


def _expiring(x: int) -> int:
    return x


@pytest.mark.timeout(60)
@pytest.mark.parametrize("broker", ["redis", "sqlite", "amqp"])
def test_qtuis_worker_runs_a_message_with_an_expiration(
        request: pytest.FixtureRequest, broker: str) -> None:
    setup: Setup = request.getfixturevalue(f"{broker}_setup")
    app = setup.app()
    try:
        result = app.send_task("tasks.add", (2, 3), expires=60)
        with inspector_for(app) as inspector:
            (waiting,) = inspector.peek(setup.queue).messages
        assert 0 < float(waiting.properties["expiration"]) <= 60_000
        with setup.worker("-P", "solo"):
            assert result.get(timeout=30) == 5
    finally:
        app.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("client", ["celery", "qtui"])
def test_rabbitmq_drops_a_message_nobody_took_before_its_expiration(
        amqp_url: str, client: str) -> None:
    queue = f"expiration-{client}-{uuid.uuid4().hex[:10]}"
    if client == "celery":
        app: Any = celery.Celery("expiration", broker=amqp_url)
    else:
        app = App("expiration", broker=amqp_url, backend=None)
    app.conf.task_default_queue = queue
    try:
        app.send_task("tasks.add", (1, 2), expires=PAST)
        kept = app.send_task("tasks.add", (3, 4)).id
        with Connection(amqp_url) as conn:
            channel = conn.default_channel
            declared = Queue(queue, durable=True)(channel)
            left = declared.get(no_ack=True)
            assert (left.headers["id"], declared.get(no_ack=True)) == (kept, None)
            channel.queue_delete(queue)
    finally:
        app.close()


@pytest.mark.timeout(60)
def test_rabbitmq_drops_the_expired_tasks_of_a_batch_and_keeps_the_others(amqp_url: str) -> None:
    queue = f"expiration-batch-{uuid.uuid4().hex[:10]}"
    app = App("expiration", broker=amqp_url, backend=None, task_default_queue=queue)
    try:
        sent = app.send_many([{"task": "tasks.add", "args": (i, i), "kwargs": {},
                               "options": {"expires": PAST} if i % 2 else {}}
                              for i in range(4)])
        with Connection(amqp_url) as conn:
            channel = conn.default_channel
            declared = Queue(queue, durable=True)(channel)
            left = [declared.get(no_ack=True) for _ in range(3)]
            assert [m.headers["id"] if m else None for m in left] == [
                sent[0].id, sent[2].id, None]
            channel.queue_delete(queue)
    finally:
        app.close()
