"""A prefork child records the start of each delivery it runs in the ledger itself, right before
the task runs (issue 19 item 3): the worker's main process no longer sends a start record per
hand-off, and a task handed over but never started is never recorded as started."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from qtui.core import App, states
from qtui.core.ledger import KEY_PREFIX
from qtui.core.protocol import TaskMessage
from qtui.workers.execution import Lost, Outcome, WorkItem
from qtui.workers.pools.prefork import PreforkPool
from qtui.workers.redelivery import STARTED

from .conftest import REDIS_HOST, REDIS_PORT

URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
STARTED_KEY = KEY_PREFIX + STARTED
app = App("prefork-starts", broker=URL, backend=None)


@app.task(name="starts.recorded", ignore_result=True)
def recorded(key: str) -> bool:
    """Whether the start of this delivery is in the ledger while the task runs (read on a
    connection of the task's own: allowed the moment Redis takes to read the child's send)."""
    client = redis.Redis.from_url(URL)
    try:
        deadline = time.monotonic() + 2.0
        while client.zscore(STARTED_KEY, key) is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True
    finally:
        client.close()


@pytest.fixture
def keys(redis_url: str, unique: str) -> Iterator[list[str]]:
    """Start keys of this test's own (removed from the shared ledger afterwards)."""
    made = [f"starts-{unique}-{n}:0:0" for n in range(3)]
    yield made
    client = redis.Redis.from_url(redis_url)
    client.zrem(STARTED_KEY, *made)
    client.close()


@pytest.mark.timeout(60)
def test_a_child_records_the_start_of_its_delivery_before_the_task_runs(keys: list[str]):
    reports: list[Outcome | Lost] = []
    pool = PreforkPool(app, 2, reports.append)
    pool.start()
    try:
        for job_id, key in enumerate(keys):
            message = TaskMessage(id=key.partition(":")[0], task="starts.recorded", args=(key,),
                                  ignore_result=True)
            item = WorkItem(job_id, message, {"routing_key": "starts"}, "starts@test",
                            start_key=key)
            while not pool.apply(item):
                pool.collect(1.0)
        while len(reports) < len(keys):
            pool.collect(1.0)
    finally:
        pool.stop()
    assert [(r.state, r.result) for r in sorted(reports, key=lambda r: r.job_id)] == \
        [(states.SUCCESS, "True")] * len(keys)
