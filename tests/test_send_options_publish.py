"""Celery's per-call publishing options (``retry``, ``retry_policy``, ``producer``,
``publisher``, ``connection``, ``add_to_parent``) and its time-limit check, as
``apply_async`` and ``send_task`` take them."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Producer

from qtui.core import App
from qtui.core.canvas import apply as apply_signature
from qtui.core.canvas import group
from qtui.core.exceptions import BrokerUnavailable, SendFailed
from qtui.core.protocol import parse

from .processes import write_module
from .redis_server import redis_server, spare_port

#: A port of this engineer's range nothing listens on: another broker.
OTHER_PORT = 16449


@pytest.fixture
def app(unique: str) -> Iterator[App]:
    app = App("tasks", broker="memory://", task_default_queue=f"q-{unique}")
    yield app
    app.close()


@pytest.fixture
def stopped_broker(tmp_path: Path, unique: str) -> Iterator[App]:
    """An app whose broker took one task and then stopped: its pooled producer's connection
    is gone. The redis-server is the test's own, on a port free when it starts (a fixed one
    was another session's server on this shared machine, and the sends reached it)."""
    port = spare_port()
    app = App("tasks", broker=f"redis://127.0.0.1:{port}/0",
              task_default_queue=f"q-{unique}", broker_connection_timeout=1)
    with redis_server(tmp_path, port, durable=False):
        app.send_task("t.warm")
    yield app
    app.close()


def fetch(queue: str) -> Any:
    with Connection("memory://") as conn:
        message = conn.SimpleQueue(queue).get(timeout=1)
        message.ack()
        return parse(message.decode(), message.headers, message.properties)


def counting_policy(retries: int) -> tuple[dict[str, Any], list[BaseException]]:
    """A retry policy with no wait whose errback records each retry."""
    seen: list[BaseException] = []
    return ({"max_retries": retries, "interval_start": 0, "interval_step": 0,
             "interval_max": 0, "errback": lambda exc, _interval: seen.append(exc)}, seen)


def test_retry_false_to_a_stopped_broker_fails_at_once(stopped_broker):
    policy, retries = counting_policy(3)
    with pytest.raises(BrokerUnavailable, match="unreachable"):
        stopped_broker.send_task("t.add", (1, 2), retry=False, retry_policy=policy)
    assert retries == []


def test_retry_true_retries_per_the_calls_policy(stopped_broker):
    policy, retries = counting_policy(2)
    with pytest.raises(BrokerUnavailable, match="unreachable"):
        stopped_broker.send_task("t.add", (1, 2), retry=True, retry_policy=policy)
    assert len(retries) == 3  # kombu's errback: each failed reconnect, the last one included


def test_retry_true_overrides_task_publish_retry_off(stopped_broker):
    stopped_broker.conf.task_publish_retry = False
    policy, retries = counting_policy(1)
    with pytest.raises(BrokerUnavailable):
        stopped_broker.send_task("t.add", retry=True, retry_policy=policy)
    assert len(retries) == 2


def test_retry_false_overrides_the_configured_policy(stopped_broker):
    policy, retries = counting_policy(3)
    stopped_broker.conf.task_publish_retry_policy = policy
    with pytest.raises(BrokerUnavailable):
        stopped_broker.send_task("t.add", retry=False)
    assert retries == []


def test_a_batch_never_sends_again_whatever_its_calls_retry(stopped_broker):
    policy, retries = counting_policy(3)
    with pytest.raises(SendFailed), stopped_broker.sending_batch():
        stopped_broker.send_task("t.add", (1,), retry=True, retry_policy=policy)
        stopped_broker.send_task("t.add", (2,), retry=True, retry_policy=policy)
    assert retries == []


def test_a_signatures_apply_async_takes_retry_as_the_tasks_does(stopped_broker):
    @stopped_broker.task
    def add(x, y):
        return x + y

    policy, retries = counting_policy(2)
    with pytest.raises(BrokerUnavailable, match="unreachable"):
        add.s(1, 2).apply_async(retry=True, retry_policy=policy)
    assert len(retries) == 3


def test_a_signatures_own_retry_policy_is_checked_on_the_clients_send(app):
    @app.task
    def add(x, y):
        return x + y

    with pytest.raises(TypeError, match=r"retry_policy must be .*'max_retrys'"):
        add.s(1, 2).set(retry_policy={"max_retrys": 1}).delay()


def test_a_chains_apply_async_takes_publishing_options(app, unique):
    @app.task
    def add(x, y):
        return x + y

    (add.s(1, 2) | add.s(3)).apply_async(retry=False, add_to_parent=False)
    assert fetch(f"q-{unique}").args == (1, 2)


def test_a_groups_apply_async_takes_publishing_options_and_sends_one_batch(app, unique):
    @app.task
    def add(x, y):
        return x + y

    group(add.s(1, 2), add.s(3, 4)).apply_async(retry=True, add_to_parent=False)
    assert [fetch(f"q-{unique}").args for _ in range(2)] == [(1, 2), (3, 4)]


def test_a_retry_policy_key_the_config_does_not_know_is_a_clear_error(app):
    with pytest.raises(TypeError, match=r"retry_policy must be a table with .*'max_retrys'"):
        app.send_task("t.add", retry_policy={"max_retrys": 1})


def test_retry_policy_keys_go_over_the_configured_ones(app, unique):
    app.send_task("t.add", (1,), retry=True, retry_policy={"max_retries": 9})
    assert fetch(f"q-{unique}").task == "t.add"


@pytest.mark.parametrize("key", ["producer", "publisher"])
def test_a_producer_on_the_apps_broker_is_accepted(app, unique, key):
    with Connection("memory://") as conn:
        app.send_task("t.add", (2, 2), **{key: Producer(conn)})
    assert fetch(f"q-{unique}").args == (2, 2)


def test_a_connection_to_the_apps_broker_is_accepted(app, unique):
    with Connection("memory://") as conn:
        app.send_task("t.add", (2, 2), connection=conn)
    assert fetch(f"q-{unique}").args == (2, 2)


def test_a_connection_to_the_same_redis_written_differently_is_accepted(unique):
    app = App(broker="redis://127.0.0.1:6379", task_default_queue=f"q-{unique}")
    try:
        with Connection("redis://127.0.0.1:6379/0") as conn:
            result = app.send_task("t.add", connection=conn, ignore_result=True)
        with Connection("redis://127.0.0.1:6379/0") as conn:
            message = conn.SimpleQueue(f"q-{unique}").get(timeout=5)
            message.ack()
        assert message.headers["id"] == result.id
    finally:
        app.close()


@pytest.mark.parametrize("key", ["producer", "publisher", "connection"])
def test_a_producer_or_connection_to_another_broker_is_refused(app, key):
    other = Connection(f"redis://127.0.0.1:{OTHER_PORT}/0")
    given = other if key == "connection" else Producer(other)
    with pytest.raises(ValueError, match=rf"{key} points at redis://.*:{OTHER_PORT}.*"
                                         r"not at this app's broker memory://"):
        app.send_task("t.add", **{key: given})


def test_a_producer_that_is_not_one_is_a_type_error(app):
    with pytest.raises(TypeError, match="producer must be a kombu Producer, got str"):
        app.send_task("t.add", producer="redis://")


def test_add_to_parent_is_accepted_and_changes_no_message(app, unique):
    @app.task
    def add(x, y):
        return x + y

    add.apply_async((1, 2), task_id="same", add_to_parent=False)
    given = fetch(f"q-{unique}")
    add.apply_async((1, 2), task_id="same")
    assert given == fetch(f"q-{unique}")


def test_a_tasks_own_soft_limit_above_its_hard_one_fails_its_send(app):
    @app.task(time_limit=5, soft_time_limit=10)
    def job():
        pass

    with pytest.raises(ValueError, match=r"soft_time_limit \(10\) must be less than or "
                                         r"equal to time_limit \(5\)"):
        job.apply_async()
    with pytest.raises(ValueError, match="soft_time_limit"):
        job.delay()


def test_limits_from_config_and_annotations_are_checked_too(app):
    @app.task(time_limit=5)
    def job():
        pass

    app.conf.task_annotations = {job.name: {"soft_time_limit": 10}}
    with pytest.raises(ValueError, match="soft_time_limit"):
        job.delay()


@pytest.mark.parametrize("limits", [{"soft_time_limit": 10}, {"time_limit": 5},
                                    {"time_limit": 5, "soft_time_limit": 5}])
def test_one_limit_alone_or_equal_limits_are_sent(app, unique, limits):
    @app.task(**limits)
    def job():
        pass

    job.delay()
    assert fetch(f"q-{unique}").task == job.name


def test_a_calls_own_limits_are_sent_as_given_as_celery_sends_them(app, unique):
    """Celery checks the task's limits only: a retry of a message a Celery client sent with
    a soft limit above its hard one goes out as it came."""
    @app.task
    def job():
        pass

    job.apply_async(time_limit=5, soft_time_limit=10)
    message = fetch(f"q-{unique}")
    assert (message.time_limit, message.soft_time_limit) == (5, 10)


def test_a_signature_carrying_publish_options_is_sent_as_a_worker_sends_it(app, unique):
    """What a Celery client's signature may carry (a link, a chain step) is no reason for a
    worker to fail the send: the options are left out."""
    options = {"retry": False, "retry_policy": {"max_retrys": 1}, "add_to_parent": True,
               "producer": "not one", "connection": "not one"}
    apply_signature(app, {"task": "t.add", "args": [1], "kwargs": {}, "options": options})
    assert fetch(f"q-{unique}").args == (1,)


def test_a_celery_style_module_with_publish_options_loads_and_sends(tmp_path, monkeypatch,
                                                                    unique):
    write_module(tmp_path, f"proj_{unique}", textwrap.dedent(f"""
        from qtui.core import App as Celery

        app = Celery("proj", broker="redis://127.0.0.1:6379/0",
                     task_default_queue="q-{unique}", task_ignore_result=True)

        @app.task
        def add(x, y):
            return x + y

        def enqueue():
            return add.apply_async((2, 3), retry=True,
                                   retry_policy={{"max_retries": 2, "interval_start": 0}},
                                   add_to_parent=False)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(f"proj_{unique}")
    try:
        result = module.enqueue()
        with Connection("redis://127.0.0.1:6379/0") as conn:
            message = conn.SimpleQueue(f"q-{unique}").get(timeout=5)
            message.ack()
        assert (message.headers["id"], message.headers["task"]) == (result.id, module.add.name)
        assert message.decode()[0] == [2, 3]
    finally:
        module.app.close()


def test_an_eager_call_checks_the_tasks_limits_too(app):
    app.conf.task_always_eager = True

    @app.task(time_limit=5, soft_time_limit=10)
    def job():
        pass

    with pytest.raises(ValueError, match="soft_time_limit"):
        job.delay()
