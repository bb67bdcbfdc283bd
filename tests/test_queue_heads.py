"""The next message of a queue, and when it was enqueued where the broker says: what the
exporter's oldest-message age is worked out from. Redis database 10 (the exporter's tests')."""

from __future__ import annotations

import time

import pytest

from qtui.core import App
from qtui.core.queues import inspector_for

from .services import REDIS_HOST, REDIS_PORT, need


@pytest.mark.redis
def test_redis_heads_name_the_next_task_of_each_priority_list(unique):
    need("Redis", REDIS_HOST, REDIS_PORT)
    queue = f"heads-{unique}"
    app = App("client", broker=f"redis://{REDIS_HOST}:{REDIS_PORT}/10")
    try:
        first = app.send_task("tasks.add", args=[1, 2], queue=queue)
        app.send_task("tasks.add", args=[3, 4], queue=queue)
        urgent = app.send_task("tasks.add", args=[5, 6], queue=queue, priority=9)
        with inspector_for(app) as inspector:
            heads = inspector.heads([queue, f"empty-{unique}"])
            inspector.purge(queue)
    finally:
        app.close()
    assert sorted(h.task_id for h in heads[queue]) == sorted([first.id, urgent.id])
    assert f"empty-{unique}" not in heads


def test_the_embedded_broker_dates_the_oldest_ready_message(tmp_path):
    app = App("client", broker=f"sqlite://{tmp_path}/broker.sqlite", task_default_queue="work")
    try:
        before = time.time()
        app.send_task("tasks.add", args=[1, 2])
        app.send_task("tasks.add", args=[3, 4])
        with inspector_for(app) as inspector:
            heads = inspector.heads(["work", "idle"])
    finally:
        app.close()
    [head] = heads["work"]
    assert head.task_id is None and head.enqueued_at is not None
    assert before <= head.enqueued_at <= time.time()
    assert "idle" not in heads

