"""App and tasks (unit level, on kombu's in-memory transport): naming, options, annotations,
sending, ETA and expiry, retries."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from queue import Empty
from typing import Any

import pytest
from kombu import Connection, Queue

from qtui.core import App
from qtui.core.exceptions import ImproperlyConfigured, MaxRetriesExceededError, NotRegistered, Retry
from qtui.core.protocol import parse
from qtui.core.task import Request


@pytest.fixture
def app(unique):
    app = App("tasks", broker="memory://", task_default_queue=f"q-{unique}")
    yield app
    app.close()


def fetch(app: App, queue: str):
    """The next message on a queue of the in-memory broker, parsed."""
    with Connection("memory://") as conn:
        message = conn.SimpleQueue(queue).get(timeout=1)
        message.ack()
        return parse(message.decode(), message.headers, message.properties), message


def test_bare_decorator_names_the_task_after_module_and_function(app):
    @app.task
    def add(x, y):
        return x + y

    assert add.name == f"{__name__}.add"
    assert app.tasks[add.name] is add
    assert add(2, 3) == 5


def test_main_module_tasks_are_named_after_the_app(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        from qtui.core import App
        app = App("tasks", broker="memory://")
        @app.task
        def add(x, y):
            return x + y
        print(add.name)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                         timeout=60)
    assert out.stdout.strip() == "tasks.add"


def test_decorator_options_are_kept(app):
    @app.task(name="custom.name", bind=True, max_retries=7, default_retry_delay=2,
              rate_limit="10/s", time_limit=30, soft_time_limit=20, acks_late=False,
              ignore_result=True, queue="hipri", autoretry_for=(KeyError,), retry_backoff=True)
    def job(self):
        return self.request.id

    assert job.name == "custom.name"
    assert (job.max_retries, job.default_retry_delay, job.rate_limit) == (7, 2, "10/s")
    assert (job.time_limit, job.soft_time_limit, job.acks_late) == (30, 20, False)
    assert (job.ignore_result, job.queue, job.autoretry_for) == (True, "hipri", (KeyError,))
    assert job() is None  # called directly: a default request


def test_an_unknown_decorator_option_is_a_clear_error(app):
    with pytest.raises(TypeError, match=r"unknown option.*'retrys'"):
        @app.task(retrys=3)
        def job():
            pass


def test_config_defaults_reach_tasks_defined_before_the_change(app):
    @app.task
    def job():
        pass

    assert job.acks_late is True
    app.conf.update(task_acks_late=False, task_time_limit=9)
    assert (job.acks_late, job.time_limit) == (False, 9)


def test_annotations_override_decorator_options(app):
    @app.task(rate_limit="1/s")
    def job():
        pass

    @app.task
    def other():
        pass

    app.conf.task_annotations = {job.name: {"rate_limit": "10/m"}, "*": {"max_retries": 1}}
    assert job.rate_limit == "10/m"
    assert other.rate_limit is None
    assert (job.max_retries, other.max_retries) == (1, 1)
    app.conf.task_annotations = [lambda name: {"time_limit": 5} if name == other.name else None]
    assert (other.time_limit, job.time_limit) == (5, None)


def test_delay_sends_a_protocol_v2_message_to_the_default_queue(app):
    @app.task
    def add(x, y):
        return x + y

    result = add.delay(4, 4)
    message, raw = fetch(app, app.conf.task_default_queue)
    assert (message.id, message.task, message.args, message.kwargs) == (result.id, add.name,
                                                                        (4, 4), {})
    assert raw.content_type == "application/json"
    assert raw.headers["lang"] == "py" and raw.properties["correlation_id"] == result.id


def test_apply_async_carries_every_option(app, unique):
    @app.task
    def add(x, y):
        return x + y

    before = datetime.now(timezone.utc)
    result = add.apply_async((1,), {"y": 2}, countdown=30, expires=60, queue=f"other-{unique}",
                             priority=3, headers={"tenant": "acme"}, time_limit=10,
                             soft_time_limit=5, ignore_result=True, task_id="fixed-id")
    message, _raw = fetch(app, f"other-{unique}")
    assert result.id == message.id == "fixed-id"
    assert before + timedelta(seconds=29) < message.eta < before + timedelta(seconds=32)
    assert before + timedelta(seconds=59) < message.expires < before + timedelta(seconds=62)
    assert (message.priority, message.time_limit, message.soft_time_limit) == (3, 10, 5)
    assert message.ignore_result is True and message.headers == {"tenant": "acme"}


def test_naive_eta_is_read_in_the_configured_time_zone(app):
    @app.task
    def job():
        pass

    app.conf.timezone = "Asia/Tokyo"
    job.apply_async(eta=datetime(2030, 1, 1, 9, 0))
    message, _ = fetch(app, app.conf.task_default_queue)
    assert message.eta == datetime(2030, 1, 1, 0, 0, tzinfo=timezone.utc)


def test_arguments_that_do_not_fit_fail_at_the_call_site(app):
    @app.task
    def add(x, y):
        return x + y

    with pytest.raises(TypeError, match="missing a required argument"):
        add.delay(1)


def test_send_task_needs_no_registered_task(app):
    result = app.send_task("elsewhere.task", args=[1], kwargs={"a": 2})
    message, _ = fetch(app, app.conf.task_default_queue)
    assert (message.task, message.id, message.args) == ("elsewhere.task", result.id, (1,))


def test_get_task_names_what_is_missing(app):
    with pytest.raises(NotRegistered, match="'nope' is not registered"):
        app.get_task("nope")


def test_get_without_a_backend_says_how_to_configure_one(app):
    result = app.send_task("x")
    with pytest.raises(ImproperlyConfigured, match="no result backend is configured"):
        result.get(timeout=1)


def test_retry_resends_with_one_more_retry_and_raises_retry(app):
    @app.task(bind=True, default_retry_delay=5)
    def flaky(self, n):
        raise self.retry(exc=ValueError("not yet"))

    flaky.push_request(Request(id="r-1", task=flaky.name, args=(1,), retries=0,
                               called_directly=False))
    try:
        with pytest.raises(Retry) as info:
            flaky.run(flaky, 1)
    finally:
        flaky.pop_request()
    assert info.value.when == 5
    message, _ = fetch(app, app.conf.task_default_queue)
    assert (message.id, message.retries, message.args) == ("r-1", 1, (1,))
    assert message.eta is not None


def test_a_retry_inside_a_sending_batch_is_sent_before_its_retry_is_raised(app):
    """The Retry ends the task (and any sending_batch around it): the retry message must be
    out already, not held."""
    @app.task(bind=True, default_retry_delay=5)
    def flaky(self, n):
        raise self.retry(exc=ValueError("not yet"))

    flaky.push_request(Request(id="r-batch", task=flaky.name, args=(1,), retries=0,
                               called_directly=False))
    try:
        with app.sending_batch():
            with pytest.raises(Retry):
                flaky.run(flaky, 1)
            message, _ = fetch(app, app.conf.task_default_queue)
    finally:
        flaky.pop_request()
    assert (message.id, message.retries) == ("r-batch", 1)


def test_a_sending_batch_that_raises_sends_what_it_held_then_raises(app):
    with pytest.raises(ValueError, match="later"):
        with app.sending_batch():
            held = app.send_task("tasks.first", (1,))
            raise ValueError("something later failed")
    message, _ = fetch(app, app.conf.task_default_queue)
    assert (message.id, message.task) == (held.id, "tasks.first")


def test_a_send_many_that_fails_part_way_drops_its_own_calls_even_inside_a_block(app):
    """send_many is all or nothing for a wrong call; the block around it still sends what it
    held before."""
    @app.task(name="tasks.pair")
    def pair(x, y=0):
        return x + y

    with pytest.raises(ValueError, match="later"):
        with app.sending_batch():
            first = app.send_task("tasks.first")
            with pytest.raises(TypeError, match=r"tasks\.pair"):
                app.send_many([pair.s(1, 2), pair.s(1, 2, 3)])
            raise ValueError("something later failed")
    message, _ = fetch(app, app.conf.task_default_queue)
    assert message.id == first.id
    with pytest.raises(Empty):
        fetch(app, app.conf.task_default_queue)


def test_retry_keeps_the_expiry_priority_serializer_and_result_setting(app):
    app.conf.accept_content = ["json", "pickle"]

    @app.task(bind=True, serializer="pickle", ignore_result=True, default_retry_delay=1)
    def flaky(self):
        raise self.retry()

    expires = datetime(2030, 1, 1, tzinfo=timezone.utc)
    flaky.push_request(Request(id="r-3", task=flaky.name, retries=0, expires=expires,
                               delivery_info={"priority": 7}, called_directly=False))
    try:
        with pytest.raises(Retry):
            flaky.run(flaky)
    finally:
        flaky.pop_request()
    with Connection("memory://") as conn:  # pickle: read as it arrives, never decoded
        raw = Queue(app.conf.task_default_queue)(conn.default_channel).get(
            no_ack=True, accept=["application/x-python-serialize"])
    assert raw.content_type == "application/x-python-serialize"
    assert raw.headers["expires"] == expires.isoformat()
    assert (raw.properties["priority"], raw.headers["ignore_result"]) == (7, True)


def test_retry_past_max_retries_raises_the_original_exception(app):
    @app.task(bind=True, max_retries=2)
    def flaky(self):
        raise self.retry(exc=KeyError("gone"))

    flaky.push_request(Request(id="r-2", retries=2, called_directly=False))
    try:
        with pytest.raises(KeyError):
            flaky.run(flaky)
        with pytest.raises(MaxRetriesExceededError, match="max_retries=2"):
            flaky.retry()
    finally:
        flaky.pop_request()


def test_retry_outside_a_worker_is_refused(app):
    @app.task(bind=True)
    def job(self):
        return self.retry()

    with pytest.raises(RuntimeError, match="called directly"):
        job()


def test_retry_backoff_grows_exponentially_and_is_capped(app):
    @app.task(retry_backoff=2, retry_backoff_max=10, retry_jitter=False)
    def job():
        pass

    assert [job.retry_delay(n) for n in range(5)] == [2, 4, 8, 10, 10]


def test_an_unreachable_broker_is_a_clear_error_with_the_url_masked():
    from qtui.core.exceptions import BrokerUnavailable
    app = App("t", broker="redis://:secret@127.0.0.1:1/0",
              task_publish_retry_policy={"max_retries": 1, "interval_start": 0,
                                         "interval_step": 0.1, "interval_max": 0.1})
    with pytest.raises(BrokerUnavailable) as info:
        app.send_task("tasks.add")
    assert "redis://:**@127.0.0.1:1/0 is unreachable" in str(info.value)
    assert "secret" not in str(info.value)


class _Refused(Exception):
    """An error a retry policy names in ``retry_errors``."""


@pytest.mark.parametrize("error", ["connection", "retry_errors", "other"])
@pytest.mark.parametrize("named", [(_Refused,), _Refused], ids=["tuple", "class"])
@pytest.mark.parametrize("max_retries", [0, 1, 3, None])
@pytest.mark.parametrize("failures", [0, 1, 2, 4])
def test_a_send_that_fails_is_retried_exactly_as_kombus_ensure_retries_it(
        error, named, max_retries, failures):
    """A send's first attempt is made before kombu's ``ensure`` is built, and only an error
    ensure would retry builds it: the attempts, the errback's and ``on_revive``'s calls, and
    what is raised in the end are the same as when ensure makes every attempt; the policy's
    ``retry_errors`` a tuple or one class, as ensure takes either."""
    from amqp.exceptions import ConnectionError as AmqpConnectionError
    from kombu import Producer

    from qtui.core import sending

    kind = {"connection": AmqpConnectionError, "retry_errors": _Refused,
            "other": TypeError}[error]

    def run(send: Callable[..., Any]) -> tuple[list[Any], Any]:
        seen: list[Any] = []
        left = [failures]

        def attempt() -> str:
            seen.append("attempt")
            if left[0]:
                left[0] -= 1
                raise kind(f"failure {failures - left[0]}")
            return "sent"

        policy = {"max_retries": max_retries, "interval_start": 0, "interval_step": 0,
                  "interval_max": 0, "retry_errors": named,
                  "errback": lambda exc, interval: seen.append(("errback", str(exc), interval)),
                  "on_revive": lambda channel: seen.append("revived")}
        with Connection("memory://") as connection:
            producer = Producer(connection)
            try:
                outcome: Any = send(producer, policy, attempt)
            except Exception as exc:  # noqa: BLE001 - the outcome compared, whatever it is
                outcome = (type(exc), str(exc))
        return seen, outcome

    def ensured(producer: Any, policy: dict[str, Any], attempt: Callable[[], str]) -> str:
        result: str = producer.connection.ensure(producer, attempt, **policy)()
        return result

    def sent(producer: Any, policy: dict[str, Any], attempt: Callable[[], str]) -> str:
        return sending._retrying(True, producer, policy, attempt)

    assert run(sent) == run(ensured)


def test_arguments_json_cannot_encode_are_refused_at_the_call_site(app):
    with pytest.raises(TypeError, match="cannot be serialized with 'json'"):
        app.send_task("tasks.add", args=[object()])


def test_a_workers_accept_content_set_after_it_started_applies_to_the_next_message():
    from qtui.workers.worker import Worker
    app = App("t", broker="memory://")
    worker = Worker(app, pool="solo", heartbeat=False, send_events=False)
    assert worker._accept_content() == ["json"]
    app.conf.accept_content = ["json", "msgpack"]
    assert worker._accept_content() == ["json", "msgpack"]
