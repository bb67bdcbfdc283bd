"""A queues poll: depths, oldest messages' ages (exact from qtui's publish-time header or the
embedded broker's own record, inferred from ``task-sent``, else unknown), dead-letter depths and
scheduled counts; on Redis one round trip for all queues. Redis database 5 (issue 16's tests)."""

from __future__ import annotations

import time

import pytest
import redis.connection

from qtui.core import App
from qtui.core.protocol import dead_queue_of
from qtui.core.queues import LISTING_REUSE, Age, QueueHead, inspector_for, oldest_wait

from .services import REDIS_HOST, REDIS_PORT, need

REDIS_DB5 = f"redis://{REDIS_HOST}:{REDIS_PORT}/5"


def _never_sent(task_id: str) -> float | None:
    return None


@pytest.fixture
def redis_app(unique):
    need("Redis", REDIS_HOST, REDIS_PORT)
    app = App("client", broker=REDIS_DB5)
    yield app
    with inspector_for(app) as inspector:
        for key in inspector.connection.default_channel.client.scan_iter(f"*{unique}*"):
            inspector.connection.default_channel.client.delete(key)
    app.close()


@pytest.mark.redis
def test_a_qtui_sent_message_is_dated_exactly_by_its_publish_time_header_on_redis(
        redis_app, unique):
    queue = f"age-{unique}"
    before = time.time()
    redis_app.send_task("tasks.add", args=[1, 2], queue=queue)
    after = time.time()
    with inspector_for(redis_app) as inspector:
        poll = inspector.poll([queue])
    [head] = poll.heads[queue]
    assert head.enqueued_at is not None and before <= head.enqueued_at <= after
    wait = oldest_wait(1, poll.heads[queue], _never_sent, after + 60)
    assert wait is not None and wait.exact and 60 <= wait.seconds <= 60 + (after - before)


@pytest.mark.redis
def test_a_celery_sent_message_is_dated_by_its_task_sent_event_else_unknown(redis_app, unique):
    celery = pytest.importorskip("celery")
    queue = f"celery-age-{unique}"
    client = celery.Celery("client", broker=REDIS_DB5)
    try:
        sent = client.send_task("tasks.add", args=[1, 2], queue=queue)
    finally:
        client.close()
    with inspector_for(redis_app) as inspector:
        poll = inspector.poll([queue])
    assert poll.heads[queue] == [QueueHead(sent.id, None)]
    seen = {sent.id: 1000.0}
    assert oldest_wait(1, poll.heads[queue], seen.get, 1030.0) == Age(30.0, exact=False)
    assert oldest_wait(1, poll.heads[queue], _never_sent, 1030.0) is None


def test_the_embedded_broker_dates_a_message_exactly(tmp_path):
    app = App("client", broker=f"sqlite://{tmp_path}/broker.sqlite", task_default_queue="work")
    try:
        before = time.time()
        app.send_task("tasks.add", args=[1, 2])
        with inspector_for(app) as inspector:
            poll = inspector.poll(["work"])
    finally:
        app.close()
    wait = oldest_wait(1, poll.heads["work"], _never_sent, before + 100)
    assert wait is not None and wait.exact and wait.seconds <= 100


@pytest.mark.redis
def test_a_poll_counts_dead_letters_and_scheduled_tasks_apart_from_the_queue(redis_app, unique):
    queue = f"mixed-{unique}"
    redis_app.send_task("tasks.add", args=[1, 2], queue=queue)
    redis_app.send_task("tasks.add", args=[1, 2], queue=f"{queue}.dead")
    redis_app.send_task("tasks.add", args=[1, 2], queue=f"{queue}.dead")
    with inspector_for(redis_app) as inspector:
        inspector.connection.default_channel.client.zadd(
            f"qtui.delayed.{queue}", {"member-1": 1.0})
        poll = inspector.poll([queue])
    [info] = [q for q in poll.queues if q.name == queue]
    assert (info.messages, info.scheduled, poll.dead[queue]) == (1, 1, 2)
    assert f"{queue}.dead" not in {q.name for q in poll.queues}


@pytest.mark.redis
def test_a_redis_poll_of_many_queues_is_one_round_trip_once_they_are_listed(
        redis_app, unique, monkeypatch):
    names = [f"trip-{unique}-{n}" for n in range(50)]
    for name in names[::5]:
        redis_app.send_task("tasks.add", args=[1, 2], queue=name)
    sent = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counted(self, command, check_health=True):
        sent.append(command)
        return original(self, command, check_health)

    with inspector_for(redis_app) as inspector:
        inspector.poll(names)  # opens the connection and lists the bound queues
        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
        poll = inspector.poll(names, LISTING_REUSE)  # as the console and the exporter poll
    assert len(sent) == 1
    assert {q.name: q.messages for q in poll.queues if q.name in names} == {
        name: 1 if name in names[::5] else 0 for name in names}


@pytest.mark.redis
def test_the_exporter_dates_a_qtui_sent_message_on_redis_without_any_event(redis_app, unique):
    from qtui.tui.exporter import Exporter

    queue = f"exported-{unique}"
    redis_app.send_task("tasks.add", args=[1, 2], queue=queue)
    exporter = Exporter(redis_app)
    exporter.poll_result = exporter._read_queues({queue})
    [info] = [q for q in exporter.poll_result.queues if q.name == queue]
    with exporter.lock:
        age = exporter.oldest_age(info, time.time() + 5)
    assert age is not None and age >= 5


def test_a_queue_named_just_dot_dead_is_an_ordinary_queue(tmp_path):
    """It holds no queue's dead letters: listed with its depth, and its own dead letters are
    ``.dead.dead`` (the poll and ``qtui dead`` follow one rule)."""
    app = App("client", broker=f"sqlite://{tmp_path}/broker.sqlite")
    try:
        app.send_task("tasks.add", args=[1, 2], queue=".dead")
        with inspector_for(app) as inspector:
            poll = inspector.poll([".dead"])
    finally:
        app.close()
    assert [(q.name, q.messages) for q in poll.queues] == [(".dead", 1)]
    assert poll.dead == {".dead": 0}  # its own dead-letter queue, not the dead letters of ""
    assert dead_queue_of(".dead") == ".dead.dead"
    assert dead_queue_of("reports.dead") == "reports.dead"
