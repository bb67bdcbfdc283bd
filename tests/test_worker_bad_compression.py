"""Messages kombu cannot unpack -- a ``compression`` header that is unknown or does not match the
body -- are dead-lettered with the reason, on Redis and the embedded broker, while the worker
goes on with the valid tasks around them."""

from __future__ import annotations

import pytest
from kombu import Connection, Exchange, Producer, Queue

from qtui.core import states
from qtui.core.exceptions import TaskRejectedError
from qtui.workers.deadletter import DEAD_REASON_HEADER
from qtui.workers.redelivery import direct_queue

from .worker_helpers import Setup, broker_urls, make_setup, wait_for

TASK_BODY = "[[1, 2], {}, {}]"


def _publish_compressed(setup: Setup, task_id: str, compression: str | None = None,
                        really: str | None = None) -> None:
    """A tasks.add message whose ``compression`` header lies about its (plain JSON) body, or
    one ``really`` compressed that way by kombu."""
    headers = {"lang": "py", "task": "tasks.add", "id": task_id, "retries": 0,
               "root_id": task_id, "timelimit": [None, None]}
    if compression:
        headers["compression"] = compression
    with Connection(setup.broker) as conn:
        queue = Queue(setup.queue, Exchange(setup.queue), routing_key=setup.queue)
        Producer(conn.default_channel).publish(
            TASK_BODY, exchange=setup.queue, routing_key=setup.queue, headers=headers,
            content_type="application/json", content_encoding="utf-8", declare=[queue],
            compression=really)


def _dead_letters(setup: Setup, expected: int) -> list:
    """The messages in ``<queue>.dead``, read raw: kombu's ``Queue.get`` would raise on their
    (still bad) compression."""
    found: list = []
    with Connection(setup.broker) as conn:
        channel = conn.default_channel
        name = f"{setup.queue}.dead"
        direct_queue(name)(channel).declare()

        def more() -> bool:
            message = channel.basic_get(name, no_ack=True)
            if message is not None:
                found.append(message)
            return len(found) >= expected
        wait_for(more, timeout=15)
    return found


@pytest.fixture(params=["redis", "sqlite"])
def setup(request, tmp_path, unique):
    url, backend = broker_urls(request.param, tmp_path)
    made = make_setup(tmp_path, f"qw-{unique}", url, backend)
    yield made
    made.cleanup()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_a_bad_compression_header_is_dead_lettered_and_the_worker_goes_on(setup: Setup, pool):
    app = setup.app()
    good = [app.send_task("tasks.add", args=[1, 1])]
    _publish_compressed(setup, "bad-zlib", "application/x-gzip")
    good.append(app.send_task("tasks.add", args=[2, 2]))
    _publish_compressed(setup, "bad-kind", "application/x-bogus")
    good.append(app.send_task("tasks.add", args=[3, 3]))
    _publish_compressed(setup, "good-zlib", really="zlib")
    good.append(app.AsyncResult("good-zlib"))
    with setup.worker("-P", pool, "-c", "2") as proc:
        assert [r.get(timeout=30) for r in good] == [2, 4, 6, 3]
        dead = _dead_letters(setup, expected=2)
        assert proc.poll() is None
    reasons = {m.headers.get("id"): m.headers[DEAD_REASON_HEADER] for m in dead}
    assert set(reasons) == {"bad-zlib", "bad-kind"}
    assert "cannot decompress the body as 'application/x-gzip'" in reasons["bad-zlib"]
    assert "unknown compression 'application/x-bogus'" in reasons["bad-kind"]
    for task_id in reasons:
        rejected = app.AsyncResult(task_id)
        assert rejected.state == states.REJECTED
        assert isinstance(rejected.get(propagate=False), TaskRejectedError)
    app.close()
