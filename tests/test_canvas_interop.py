"""Celery's canvas sent by a real Celery client and followed by a qtui worker: chains (``.s``
and ``.si``), link, link_error, chords joined in Celery's Redis layout -- also when a Celery
worker runs part of the header -- and a canvas field the worker cannot follow failing the task
with the reason instead of dropping the work."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from qtui.core import App, states

from .processes import celery_worker, write_module
from .worker_helpers import REDIS_URL, Setup, broker_urls, wait_for

celery = pytest.importorskip("celery")

QTUI_TASKS = """
import json
import os
import time

import redis

from qtui.core import App, Task

app = App("tasks", broker=os.environ["QTUI_TEST_BROKER"],
          backend=os.environ.get("QTUI_TEST_BACKEND") or None,
          task_default_queue=os.environ["QTUI_TEST_QUEUE"])
KEY = os.environ["QTUI_TEST_QUEUE"]
_redis = redis.Redis.from_url(os.environ["QTUI_TEST_RECORDS"])


def record(kind, **data):
    _redis.rpush(f"{KEY}:{kind}", json.dumps({"pid": os.getpid(), **data}))


@app.task
def add(x, y):
    return x + y

@app.task
def mul(x, y):
    return x * y

class Audited(Task):  # overrides apply_async, as a project's base class may
    def apply_async(self, args=None, kwargs=None, **options):
        return super().apply_async(args, kwargs, **options)

@app.task(base=Audited)
def audited_add(x, y):
    return x + y

@app.task
def fail(message):
    raise ValueError(message)

@app.task
def on_error(request, exc, traceback):
    record("errback", id=request.id, exc=repr(exc), traceback=traceback)

@app.task
def on_error_id(task_id):
    record("errback_id", id=task_id)

@app.task
def part(i):
    record("part", i=i, by="qtui")
    time.sleep(0.2)
    return i * 10

@app.task
def collect(values):
    record("body", values=values, by="qtui")
    return values

@app.task(time_limit=1)
def sleepy():
    time.sleep(30)
"""

CELERY_TASKS = """
import json
import os
import time

import redis
from celery import Celery

app = Celery("ctasks", broker={broker!r}, backend={backend!r})
app.conf.task_default_queue = {queue!r}
app.conf.worker_prefetch_multiplier = 1
_redis = redis.Redis.from_url({records!r})


def record(kind, **data):
    _redis.rpush(f"{queue}:{{kind}}", json.dumps({{"pid": os.getpid(), **data}}))


@app.task(name="tasks.part")
def part(i):
    record("part", i=i, by="celery")
    time.sleep(0.2)
    return i * 10

@app.task(name="tasks.collect")
def collect(values):
    record("body", values=values, by="celery")
    return values
"""


def celery_client(setup: Setup) -> Any:
    """A Celery app whose task stubs carry the names the qtui worker registers."""
    client = celery.Celery("client", broker=setup.broker, backend=setup.backend)
    client.conf.task_default_queue = setup.queue
    for name in ("add", "mul", "fail", "on_error", "on_error_id", "part", "collect", "sleepy"):
        client.task(name=f"tasks.{name}", typing=False)(_stub)
    return client


def _stub(*args: Any, **kwargs: Any) -> None:
    """The client never runs a task: the workers do."""


class Cluster:
    """One qtui worker per broker for this module, and a Celery client for each."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.started: dict[str, tuple[Setup, Any]] = {}
        self.stack: list[Any] = []

    def get(self, broker: str) -> tuple[Setup, Any]:
        if broker not in self.started:
            directory = self.factory.mktemp("canvas")
            url, backend = broker_urls(broker, directory)
            setup = Setup(directory, f"qc-{uuid.uuid4().hex[:10]}", url, backend)
            write_module(directory, "tasks", QTUI_TASKS)
            worker = setup.worker("-P", "prefork", "-c", "2")
            self.stack.append((setup, worker))
            process = worker.__enter__()
            self.started[broker] = (setup, process)
        return self.started[broker]

    def close(self) -> None:
        for setup, worker in reversed(self.stack):
            try:
                worker.__exit__(None, None, None)
            finally:
                setup.cleanup()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    found = Cluster(tmp_path_factory)
    try:
        yield found
    finally:
        found.close()


@pytest.fixture(params=["redis", "rabbitmq"])
def on_any(request, cluster) -> tuple[Setup, Any]:
    setup, _ = cluster.get(request.param)
    return setup, celery_client(setup)


@pytest.fixture
def on_redis(cluster) -> tuple[Setup, Any]:
    setup, _process = cluster.get("redis")
    return setup, celery_client(setup)


@pytest.mark.timeout(90)
def test_a_celery_chain_runs_every_step_with_the_previous_result(on_any):
    _setup, client = on_any
    add, mul = client.tasks["tasks.add"], client.tasks["tasks.mul"]
    result = celery.chain(add.s(1, 2), mul.s(4), add.s(1)).delay()
    assert result.get(timeout=30) == 13
    assert result.parent.get(timeout=5) == 12
    assert result.parent.parent.get(timeout=5) == 3


@pytest.mark.timeout(90)
def test_an_immutable_step_does_not_get_the_previous_result(on_any):
    _setup, client = on_any
    add = client.tasks["tasks.add"]
    result = celery.chain(add.s(1, 2), add.si(10, 10)).delay()
    assert result.get(timeout=30) == 20


@pytest.mark.timeout(90)
def test_a_link_gets_the_result_and_its_parent_id(on_redis):
    setup, client = on_redis
    add, mul = client.tasks["tasks.add"], client.tasks["tasks.mul"]
    callback = mul.s(10)
    linked = callback.freeze()
    parent = add.apply_async((2, 2), link=callback)
    assert linked.get(timeout=30) == 40
    app = App("reader", backend=setup.backend)
    try:
        meta = app.backend.get_task_meta(linked.id)
    finally:
        app.close()
    assert meta["status"] == states.SUCCESS
    assert meta.get("parent_id") == parent.id


@pytest.mark.timeout(90)
def test_a_link_error_is_called_with_the_request_the_exception_and_the_traceback(on_redis):
    setup, client = on_redis
    fail, on_error = client.tasks["tasks.fail"], client.tasks["tasks.on_error"]
    result = fail.apply_async(("boom",), link_error=on_error.s())
    with pytest.raises(Exception, match="boom"):
        result.get(timeout=30)
    records = setup.wait_records("errback", 1, timeout=15)
    assert len(records) == 1
    assert records[0]["id"] == result.id
    assert "ValueError" in records[0]["exc"] and "boom" in records[0]["exc"]
    assert "ValueError" in records[0]["traceback"]


@pytest.mark.timeout(90)
def test_an_old_style_link_error_is_sent_the_failed_task_id(on_any):
    setup, client = on_any
    fail, on_error_id = client.tasks["tasks.fail"], client.tasks["tasks.on_error_id"]
    result = fail.apply_async(("bang",), link_error=on_error_id.s())
    records = setup.wait_records("errback_id", 1, timeout=20)
    assert [r["id"] for r in records] == [result.id]


@pytest.mark.timeout(90)
def test_a_failed_step_fails_the_rest_of_the_chain(on_redis):
    _setup, client = on_redis
    fail, add = client.tasks["tasks.fail"], client.tasks["tasks.add"]
    result = celery.chain(fail.si("first"), add.s(1), add.s(2)).delay()
    with pytest.raises(Exception, match="first"):
        result.get(timeout=30)
    # get() raises the first step's error as soon as it is stored; the rest follow it.
    assert wait_for(lambda: result.state == states.FAILURE, timeout=15)
    assert wait_for(lambda: result.parent.state == states.FAILURE, timeout=15)


@pytest.mark.timeout(90)
def test_a_celery_chord_joins_on_a_qtui_worker_with_results_in_order(on_redis):
    setup, client = on_redis
    part, collect = client.tasks["tasks.part"], client.tasks["tasks.collect"]
    result = celery.chord([part.s(i) for i in range(5)], collect.s()).delay()
    assert result.get(timeout=30) == [0, 10, 20, 30, 40]
    bodies = [r for r in setup.records("body") if r["values"] == [0, 10, 20, 30, 40]]
    assert len(bodies) == 1


@pytest.mark.timeout(90)
def test_a_failed_header_task_fails_the_chord_body(on_redis):
    _setup, client = on_redis
    add, fail, collect = (client.tasks[f"tasks.{n}"] for n in ("add", "fail", "collect"))
    result = celery.chord([add.s(1, 1), fail.s("in header")], collect.s()).delay()
    with pytest.raises(Exception, match="in header"):
        result.get(timeout=30)
    # get() raises the header's error as soon as that part is stored; the body follows.
    assert wait_for(lambda: result.state == states.FAILURE, timeout=15)
    assert "Dependency" in str(result.result)


@pytest.mark.timeout(90)
def test_a_chain_step_the_worker_cannot_apply_fails_the_task_with_the_reason(on_redis):
    setup, _client = on_redis
    app = App("client", broker=setup.broker, backend=setup.backend,
              task_default_queue=setup.queue)
    try:
        step = {"task": "tasks.add", "args": [], "kwargs": {}, "options": {},
                "subtask_type": "no-such-primitive", "immutable": False}
        result = app.send_task("tasks.add", (1, 1), chain=[step])
        with pytest.raises(Exception, match="no-such-primitive"):
            result.get(timeout=30)
        assert result.state == states.FAILURE
    finally:
        app.close()
    dead = setup.dead_letters(1, timeout=15)
    assert len(dead) == 1
    assert dead[0].headers["id"] == result.id


@pytest.mark.timeout(150)
def test_a_chord_split_between_a_celery_and_a_qtui_worker_runs_its_body_once(tmp_path, unique):
    url, backend = broker_urls("redis", tmp_path)
    setup = Setup(tmp_path, f"qm-{unique}", url, backend)
    write_module(tmp_path, "tasks", QTUI_TASKS)
    write_module(tmp_path, "ctasks", CELERY_TASKS.format(
        broker=url, backend=backend, queue=setup.queue, records=REDIS_URL))
    client = celery_client(setup)
    part, collect = client.tasks["tasks.part"], client.tasks["tasks.collect"]
    try:
        with celery_worker(tmp_path, "ctasks", setup.queue), \
                setup.worker("-P", "solo", "--prefetch-multiplier", "1"):
            result = celery.chord([part.s(i) for i in range(8)], collect.s()).delay()
            expected = [i * 10 for i in range(8)]
            assert result.get(timeout=60) == expected
            parts = setup.records("part")
            assert sorted(r["i"] for r in parts) == list(range(8))
            assert {r["by"] for r in parts} == {"celery", "qtui"}
            # A second body, had it been sent, would have run by now on one of the two workers.
            wait_for(lambda: len(setup.records("body")) > 1, timeout=3)
            assert [r["values"] for r in setup.records("body")] == [expected]
    finally:
        setup.cleanup()


@pytest.mark.timeout(90)
def test_a_celery_chain_through_a_group_joins_as_a_chord_on_a_qtui_worker(on_redis):
    _setup, client = on_redis
    add, mul, collect = (client.tasks[f"tasks.{n}"] for n in ("add", "mul", "collect"))
    result = celery.chain(add.s(1, 1), celery.group(add.s(1), mul.s(3)), collect.s()).delay()
    assert result.get(timeout=30) == [3, 6]


@pytest.mark.timeout(90)
def test_a_failed_step_before_a_chord_fails_the_chord_body(on_redis):
    _setup, client = on_redis
    fail, add, collect = (client.tasks[f"tasks.{n}"] for n in ("fail", "add", "collect"))
    result = celery.chain(fail.si("early"), celery.group(add.s(1), add.s(2)), collect.s()).delay()
    assert wait_for(lambda: result.state == states.FAILURE, timeout=30)
    assert "early" in str(result.result)


@pytest.mark.timeout(90)
def test_celery_chunks_and_starmap_run_on_a_qtui_worker(on_redis):
    _setup, client = on_redis
    add = client.tasks["tasks.add"]
    assert add.starmap([(1, 2), (3, 4)]).delay().get(timeout=30) == [3, 7]
    assert add.chunks([(i, i) for i in range(5)], 2).delay().get(timeout=30) == [[0, 2], [4, 6],
                                                                                    [8]]


@pytest.mark.timeout(90)
def test_a_chain_as_a_link_runs_every_step(on_redis):
    _setup, client = on_redis
    add, mul = client.tasks["tasks.add"], client.tasks["tasks.mul"]
    callback = celery.chain(add.s(1), mul.s(10))
    last = callback.freeze()
    add.apply_async((1, 1), link=callback)
    assert last.get(timeout=30) == 30


@pytest.mark.timeout(90)
def test_a_header_task_killed_at_its_time_limit_fails_the_chord(on_redis):
    _setup, client = on_redis
    add, sleepy, collect = (client.tasks[f"tasks.{n}"] for n in ("add", "sleepy", "collect"))
    result = celery.chord([add.s(1, 1), sleepy.si()], collect.s()).delay()
    assert wait_for(lambda: result.state == states.FAILURE, timeout=30)
    assert "TimeLimitExceeded" in str(result.result)
