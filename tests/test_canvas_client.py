"""qtui's canvas client -- ``.s()``, ``.si()``, ``|``, chain, group, chord, ``link=``,
``link_error=``, GroupResult -- sends what Celery's client sends: a real Celery worker and a
qtui worker give the same outcome for each."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from qtui.core import App, GroupResult, Signature, chain, chord, group, states

from .processes import celery_worker, write_module
from .test_canvas_interop import QTUI_TASKS
from .worker_helpers import REDIS_URL, Setup, broker_urls

pytest.importorskip("celery")

CELERY_TASKS = """
import json
import os

import redis
from celery import Celery

app = Celery("ctasks", broker={broker!r}, backend={backend!r})
app.conf.task_default_queue = {queue!r}
_redis = redis.Redis.from_url({records!r})


def record(kind, **data):
    _redis.rpush(f"{queue}:{{kind}}", json.dumps({{"pid": os.getpid(), **data}}))


@app.task(name="tasks.add")
def add(x, y):
    return x + y

@app.task(name="tasks.mul")
def mul(x, y):
    return x * y

@app.task(name="tasks.fail")
def fail(message):
    raise ValueError(message)

@app.task(name="tasks.on_error_id")
def on_error_id(task_id):
    record("errback_id", id=task_id)

@app.task(name="tasks.part")
def part(i):
    return i * 10

@app.task(name="tasks.collect")
def collect(values):
    record("body", values=values)
    return values
"""


@pytest.fixture(scope="module")
def workers(tmp_path_factory) -> Iterator[dict[str, Setup]]:
    """A Celery worker and a qtui worker, each on its own queue of one Redis."""
    with ExitStack() as stack:
        found = {}
        for kind in ("celery", "qtui"):
            directory = tmp_path_factory.mktemp(kind)
            url, backend = broker_urls("redis", directory)
            setup = Setup(directory, f"qk-{uuid.uuid4().hex[:10]}", url, backend)
            stack.callback(setup.cleanup)
            write_module(directory, "tasks", QTUI_TASKS)
            write_module(directory, "ctasks", CELERY_TASKS.format(
                broker=url, backend=backend, queue=setup.queue, records=REDIS_URL))
            if kind == "celery":
                stack.enter_context(celery_worker(directory, "ctasks", setup.queue))
            else:
                stack.enter_context(setup.worker("-P", "threads", "-c", "4"))
            found[kind] = setup
        yield found


@pytest.fixture(params=["celery", "qtui"])
def client(request, workers) -> Iterator[tuple[Setup, App, dict[str, Any]]]:
    setup = workers[request.param]
    app = App("tasks", broker=setup.broker, backend=setup.backend,
              task_default_queue=setup.queue)
    tasks = {}
    for name, fun in (("add", lambda x, y: x + y), ("mul", lambda x, y: x * y),
                      ("fail", lambda message: None), ("on_error_id", lambda task_id: None),
                      ("part", lambda i: None), ("collect", lambda values: None)):
        tasks[name] = app.task(name=f"tasks.{name}")(fun)
    yield setup, app, tasks
    app.close()


@pytest.mark.timeout(60)
def test_a_chain_passes_each_result_on_and_keeps_its_parents(client):
    _setup, _app, t = client
    result = (t["add"].s(1, 2) | t["mul"].s(4) | t["add"].s(1)).delay()
    assert result.get(timeout=30) == 13
    assert result.parent.get(timeout=5) == 12
    assert result.parent.parent.get(timeout=5) == 3


@pytest.mark.timeout(60)
def test_an_immutable_step_keeps_its_own_arguments(client):
    _setup, _app, t = client
    result = chain(t["add"].s(1, 2), t["add"].si(5, 5)).apply_async()
    assert result.get(timeout=30) == 10


@pytest.mark.timeout(60)
def test_a_group_result_gets_counts_and_survives_save_and_restore(client):
    _setup, app, t = client
    result = group(t["add"].s(i, i) for i in range(4)).apply_async()
    assert isinstance(result, GroupResult)
    assert result.get(timeout=30) == [0, 2, 4, 6]
    assert result.ready() and result.completed_count() == 4
    result.save()
    restored = GroupResult.restore(result.id, app=app)
    assert restored is not None
    assert [r.id for r in restored] == [r.id for r in result]
    assert restored.get(timeout=5) == [0, 2, 4, 6]


@pytest.mark.timeout(60)
def test_a_chord_body_gets_the_header_results_in_order(client):
    _setup, _app, t = client
    result = chord([t["part"].s(i) for i in range(5)], t["collect"].s()).delay()
    assert result.get(timeout=30) == [0, 10, 20, 30, 40]
    assert isinstance(result.parent, GroupResult)


@pytest.mark.timeout(60)
def test_keyword_arguments_reach_a_groups_members_a_chains_first_step_and_a_chords_header(
        client):
    _setup, _app, t = client
    assert group(t["add"].s(1), t["add"].s(2)).apply_async(kwargs={"y": 10}).get(
        timeout=30) == [11, 12]
    assert chain(t["add"].s(1), t["mul"].s(3)).delay(y=1).get(timeout=30) == 6
    assert chord([t["add"].s(i) for i in range(3)], t["collect"].s()).delay(y=5).get(
        timeout=30) == [5, 6, 7]


@pytest.mark.timeout(60)
def test_a_group_then_a_task_in_a_chain_is_a_chord(client):
    _setup, _app, t = client
    result = chain(t["add"].s(1, 1), group(t["add"].s(1), t["mul"].s(3)), t["collect"].s()).delay()
    assert result.get(timeout=30) == [3, 6]


@pytest.mark.timeout(60)
def test_a_next_step_through_an_override_that_does_not_fit_fails_alone(workers):
    """qtui's worker sends a chain's next step of a task whose class overrides apply_async as
    it is, arguments unchecked: that step fails when it runs, the task before keeps its
    success. (Celery's worker checks them in its Task.apply_async and fails the task before.)"""
    setup = workers["qtui"]
    app = App("tasks", broker=setup.broker, backend=setup.backend,
              task_default_queue=setup.queue)
    try:
        steps = chain(Signature("tasks.add", (1, 2), app=app),
                      Signature("tasks.audited_add", (1, 2), app=app)).apply_async()
        with pytest.raises(TypeError, match="3 were given"):
            steps.get(timeout=30)
        assert (steps.parent.state, steps.parent.get(timeout=5)) == (states.SUCCESS, 3)
    finally:
        app.close()


@pytest.mark.timeout(60)
def test_link_and_link_error_are_applied(client):
    setup, _app, t = client
    callback = t["mul"].s(10)
    linked = callback.freeze()
    t["add"].apply_async((2, 3), link=callback)
    assert linked.get(timeout=30) == 50
    failed = t["fail"].apply_async(("no",), link_error=t["on_error_id"].s())
    records = setup.wait_records("errback_id", 1, timeout=20)
    assert [r["id"] for r in records] == [failed.id]
    assert failed.state == states.FAILURE


@pytest.mark.timeout(90)
def test_a_chord_joins_natively_on_the_embedded_broker_and_sqlite_results(tmp_path, unique):
    url, backend = broker_urls("sqlite", tmp_path)
    setup = Setup(tmp_path, f"qs-{unique}", url, backend)
    write_module(tmp_path, "tasks", QTUI_TASKS)
    app = App("tasks", broker=url, backend=backend, task_default_queue=setup.queue)
    part = app.task(name="tasks.part")(lambda i: None)
    collect = app.task(name="tasks.collect")(lambda values: None)
    try:
        with setup.worker("-P", "threads", "-c", "3"):
            result = chord([part.s(i) for i in range(4)], collect.s()).delay()
            assert result.get(timeout=30) == [0, 10, 20, 30]
            assert [r["values"] for r in setup.records("body")] == [[0, 10, 20, 30]]
    finally:
        app.close()
        setup.cleanup()


@pytest.mark.timeout(60)
def test_map_starmap_and_chunks_run_as_celery_runs_them(client):
    _setup, _app, t = client
    assert t["add"].starmap([(1, 2), (3, 4)]).delay().get(timeout=30) == [3, 7]
    assert t["part"].map([1, 2, 3]).delay().get(timeout=30) == [10, 20, 30]
    result = t["add"].chunks([(i, i) for i in range(5)], 2).apply_async()
    assert result.get(timeout=30) == [[0, 2], [4, 6], [8]]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["celery", "qtui"])
def test_a_chain_and_a_group_come_back_over_rpc(kind, tmp_path, unique):
    url, backend = broker_urls("rabbitmq", tmp_path)
    setup = Setup(tmp_path, f"qr-{unique}", url, backend)
    write_module(tmp_path, "tasks", QTUI_TASKS)
    write_module(tmp_path, "ctasks", CELERY_TASKS.format(
        broker=url, backend=backend, queue=setup.queue, records=REDIS_URL))
    app = App("tasks", broker=url, backend=backend, task_default_queue=setup.queue)
    add = app.task(name="tasks.add")(lambda x, y: x + y)
    mul = app.task(name="tasks.mul")(lambda x, y: x * y)
    try:
        with ExitStack() as stack:
            stack.enter_context(celery_worker(tmp_path, "ctasks", setup.queue) if kind == "celery"
                                else setup.worker("-P", "threads", "-c", "2"))
            assert (add.s(1, 2) | mul.s(4) | add.si(1, 1)).delay().get(timeout=30) == 2
            assert group(add.s(i, i) for i in range(3)).delay().get(timeout=30) == [0, 2, 4]
    finally:
        app.close()
        setup.cleanup()
