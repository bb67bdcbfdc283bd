"""The bulk bench's own guarantee (bench/bench_bulk.py): a case reports a rate only when its
queue holds exactly what it sent, every id once; on the real Redis and the embedded broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from bench.bench_bulk import check, measure, tasks_app


def sent(url: str, queue: str, count: int) -> None:
    app, noop = tasks_app(url, queue)
    try:
        app.send_many(noop.s(i) for i in range(count))
    finally:
        app.close()


def test_a_message_twice_in_the_queue_fails_the_case(redis_url: str, unique: str):
    queue = f"bench-bulk-{unique}"
    client = redis.Redis.from_url(redis_url)
    try:
        sent(redis_url, queue, 3)
        client.lset(queue, 0, client.lindex(queue, 1))  # one id twice, the count unchanged
        with pytest.raises(RuntimeError, match="1 ids twice"):
            check("qtui", "send_many", redis_url, queue, 3)
    finally:
        client.delete(queue)


def test_a_message_missing_from_the_queue_fails_the_case(redis_url: str, unique: str):
    queue = f"bench-bulk-{unique}"
    client = redis.Redis.from_url(redis_url)
    try:
        sent(redis_url, queue, 3)
        client.rpop(queue)
        with pytest.raises(RuntimeError, match="2 messages in the queue, expected 3"):
            check("qtui", "send_many", redis_url, queue, 3)
    finally:
        client.delete(queue)


def test_a_chunks_case_counts_calls_and_messages_on_the_embedded_broker(tmp_path: Path):
    figures = measure("qtui", "chunks", f"sqlite://{tmp_path / 'bulk.sqlite'}", 100, 10)
    assert figures["messages"] == 10
    assert figures["calls_rate"] == pytest.approx(10 * figures["rate"])
    json.dumps(figures)  # the child's line


@pytest.mark.parametrize("framework, way", [("celery", "chunks"), ("dramatiq", "group")])
def test_celerys_and_dramatiqs_bulk_sends_are_checked_the_same_way(
        redis_url: str, framework: str, way: str):
    figures = measure(framework, way, redis_url, 50, 10)
    assert figures["messages"] == (5 if way == "chunks" else 50)
    assert figures["broker_cpu"] is not None
