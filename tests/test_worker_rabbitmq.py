"""The worker on RabbitMQ in production: heartbeats that notice a silent broker, quorum
queues, and queues an operator made with other arguments."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from amqp.exceptions import InternalError
from kombu import Connection, Exchange, Queue
from kombu.exceptions import ChannelError

from qtui.core.delayed import DELAY_QUEUE, DUE_QUEUE, DUE_QUEUE_EXPIRES, DUE_TTL

from .services import AMQP_HOST, AMQP_PORT
from .tcp_proxy import SilentProxy
from .worker_helpers import REDIS_URL, Setup, make_setup, wait_for

QUORUM = {"x-queue-type": "quorum"}


def declare(url: str, name: str, arguments: dict[str, Any], exchange: str = "") -> None:
    """Declare a queue as an operator would, before any worker."""
    with Connection(url) as conn:
        Queue(name, Exchange(exchange), routing_key=name, durable=True,
              queue_arguments=arguments)(conn.default_channel).declare()


def take_all(url: str, name: str, expected: int, timeout: float = 15.0) -> list[Any]:
    """Messages of the queue ``name`` (basic_get: no declare that could disagree with it)."""
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(found) < expected and time.monotonic() < deadline:
        try:
            with Connection(url) as conn:
                while len(found) < expected and time.monotonic() < deadline:
                    channel = conn.channel()
                    try:
                        message = channel.basic_get(queue=name, no_ack=True)
                    except ChannelError as exc:  # the worker has not declared it yet (404)
                        assert exc.reply_code == 404, exc
                        message = None
                    if message is None:
                        time.sleep(0.1)
                    else:
                        found.append(message)
        except InternalError as exc:
            # A quorum queue just declared whose process has not started yet: RabbitMQ closes
            # the connection (541 noproc); ask again on a new one.
            assert "noproc" in str(exc), exc
            time.sleep(0.1)
    return found


@pytest.fixture
def amqp_world(tmp_path, unique, amqp_url) -> Any:
    setup = make_setup(tmp_path, f"qw-{unique}", amqp_url, REDIS_URL)
    yield setup
    setup.cleanup()


def _marks(setup: Setup, count: int, log: Any, **client: Any) -> None:
    app = setup.app(**client)
    for i in range(count):
        app.send_task("tasks.mark", args=[i])
    app.close()
    assert wait_for(lambda: len(setup.records("mark")) >= count, 30), log.read_text()[-3000:]


@pytest.mark.timeout(90)
def test_a_silent_broker_is_noticed_by_the_heartbeat_and_the_worker_reconnects(
        tmp_path, unique, amqp_url):
    proxy = SilentProxy((AMQP_HOST, AMQP_PORT))
    setup = make_setup(tmp_path, f"qw-{unique}", f"amqp://guest:guest@127.0.0.1:{proxy.port}//",
                       REDIS_URL, broker_heartbeat=1)
    try:
        with setup.worker("-P", "solo") as worker:
            proxy.silence()  # the worker's connection stays open and carries nothing any more
            assert wait_for(lambda: "Reconnected" in worker.log_path.read_text(), 30), \
                worker.log_path.read_text()[-3000:]
            app = setup.app(broker_url=amqp_url)
            app.send_task("tasks.mark", args=["after"])
            app.close()
            assert wait_for(lambda: setup.records("mark"), 20), \
                worker.log_path.read_text()[-3000:]
            proxy.close()  # the events connection is silenced too: let the worker close it
    finally:
        setup.broker = amqp_url
        setup.cleanup()
        proxy.close()


@pytest.mark.timeout(90)
def test_a_quorum_queue_from_task_queues_is_consumed(amqp_world):
    amqp_world.conf["task_queues"] = {amqp_world.queue: {"queue_type": "quorum"}}
    with amqp_world.worker("-P", "solo") as worker:
        _marks(amqp_world, 5, worker.log_path)
    # Declared as a quorum queue: declaring it so again is accepted, not refused (406).
    declare(amqp_world.broker, amqp_world.queue, QUORUM, exchange=amqp_world.queue)


@pytest.mark.timeout(90)
def test_a_quorum_queue_an_operator_made_is_consumed_as_it_is(amqp_world):
    declare(amqp_world.broker, amqp_world.queue, QUORUM, exchange=amqp_world.queue)
    with amqp_world.worker("-P", "solo") as worker:  # told nothing of it
        _marks(amqp_world, 5, worker.log_path,
               task_queues={amqp_world.queue: {"queue_type": "quorum"}})
        assert "Global QoS is disabled" in worker.log_path.read_text()


@pytest.mark.timeout(90)
def test_a_dead_letter_queue_made_with_other_arguments_is_used_as_it_is(amqp_world):
    dead = f"{amqp_world.queue}.dead"
    declare(amqp_world.broker, dead, QUORUM)
    with amqp_world.worker("-P", "solo") as worker:
        app = amqp_world.app()
        app.send_task("tasks.nope")  # unknown: dead-lettered
        app.close()
        assert len(take_all(amqp_world.broker, dead, 1)) == 1, worker.log_path.read_text()[-3000:]
        _marks(amqp_world, 1, worker.log_path)  # and the worker goes on
        assert worker.poll() is None


@pytest.mark.timeout(90)
def test_a_delay_queue_made_with_other_arguments_is_used_as_it_is(amqp_world):
    delay = DELAY_QUEUE.format(queue=amqp_world.queue, seconds=1)
    # An older ladder queue: no x-expires.
    declare(amqp_world.broker, delay, {"x-message-ttl": 1000, "x-dead-letter-exchange": "",
                                       "x-dead-letter-routing-key": amqp_world.queue})
    amqp_world.conf["worker_eta_horizon"] = 0
    with amqp_world.worker("-P", "solo") as worker:
        app = amqp_world.app()
        app.send_task("tasks.mark", args=["later"], countdown=1.5)
        app.close()
        assert wait_for(lambda: amqp_world.records("mark"), 30), \
            worker.log_path.read_text()[-3000:]
        assert worker.poll() is None


@pytest.mark.timeout(90)
def test_the_dead_letter_delay_and_due_queues_of_a_quorum_queue_are_quorum_queues(amqp_world):
    amqp_world.conf.update(task_queues={amqp_world.queue: {"queue_type": "quorum"}},
                           worker_eta_horizon=0)
    with amqp_world.worker("-P", "solo") as worker:
        app = amqp_world.app()
        app.send_task("tasks.nope")
        app.send_task("tasks.mark", args=["later"], countdown=1.5)
        app.close()
        assert len(take_all(amqp_world.broker, f"{amqp_world.queue}.dead", 1)) == 1
        assert wait_for(lambda: amqp_world.records("mark"), 30), \
            worker.log_path.read_text()[-3000:]
    delay = DELAY_QUEUE.format(queue=amqp_world.queue, seconds=1)
    declare(amqp_world.broker, f"{amqp_world.queue}.dead", QUORUM)  # a 406 if classic
    due = DUE_QUEUE.format(queue=amqp_world.queue)
    declare(amqp_world.broker, delay, {**QUORUM, "x-message-ttl": 1000,
                                       "x-dead-letter-exchange": "",
                                       "x-dead-letter-routing-key": due,
                                       "x-expires": 302_000})
    declare(amqp_world.broker, due, {**QUORUM, "x-message-ttl": DUE_TTL * 1000,
                                     "x-dead-letter-exchange": "",
                                     "x-dead-letter-routing-key": amqp_world.queue,
                                     "x-expires": DUE_QUEUE_EXPIRES * 1000})


@pytest.mark.timeout(90)
def test_a_delay_queue_that_expired_is_declared_again(amqp_world):
    delay = DELAY_QUEUE.format(queue=amqp_world.queue, seconds=1)
    amqp_world.conf["worker_eta_horizon"] = 0
    with amqp_world.worker("-P", "solo") as worker:
        app = amqp_world.app()
        app.send_task("tasks.mark", args=["first"], countdown=1.5)
        assert wait_for(lambda: amqp_world.records("mark"), 30), \
            worker.log_path.read_text()[-3000:]
        with Connection(amqp_world.broker) as conn:  # as its x-expires does when unused
            conn.default_channel.queue_delete(delay)
        app.send_task("tasks.mark", args=["second"], countdown=1.5)
        app.close()
        assert wait_for(lambda: len(amqp_world.records("mark")) == 2, 30), \
            worker.log_path.read_text()[-3000:]


@pytest.mark.timeout(90)
def test_a_quorum_queue_added_at_run_time_is_consumed(amqp_world):
    """The worker asked for global QoS (its queue is classic); the quorum queue refuses it on
    add_consumer, and the worker reconnects counting the window per consumer."""
    extra = f"{amqp_world.queue}-quorum"
    declare(amqp_world.broker, extra, QUORUM, exchange=extra)
    with amqp_world.worker("-P", "solo") as worker:
        app = amqp_world.app(task_queues={extra: {"queue_type": "quorum"}})
        try:
            hostname = f"w-{amqp_world.queue}@{socket.gethostname()}"
            replies = app.control.broadcast("add_consumer", arguments={"queue": extra},
                                            destination=[hostname], reply=True, timeout=10)
            assert replies, worker.log_path.read_text()[-3000:]
            app.send_task("tasks.mark", args=["quorum"], queue=extra)
            assert wait_for(lambda: amqp_world.records("mark"), 30), \
                worker.log_path.read_text()[-3000:]
        finally:
            app.close()
            with Connection(amqp_world.broker) as conn:
                conn.default_channel.queue_delete(extra)
        assert worker.poll() is None


@pytest.mark.timeout(90)
def test_a_task_that_ended_while_its_connection_was_lost_does_not_run_again(
        tmp_path, unique, amqp_url):
    """No result backend to tell: the worker itself remembers it settled the task while the
    broker still held the delivery, and drops the copy RabbitMQ gives back."""
    proxy = SilentProxy((AMQP_HOST, AMQP_PORT))
    setup = make_setup(tmp_path, f"qw-{unique}", f"amqp://guest:guest@127.0.0.1:{proxy.port}//",
                       None, broker_heartbeat=1)
    try:
        with setup.worker("-P", "threads", "-c", "2") as worker:
            app = setup.app(broker_url=amqp_url)
            app.send_task("tasks.slow", args=[1.0, "once"], ignore_result=True)
            assert wait_for(lambda: setup.records("started"), 20)
            proxy.silence()  # it ends before the worker or the broker notices (2 heartbeats)
            assert wait_for(lambda: "Reconnected" in worker.log_path.read_text(), 30), \
                worker.log_path.read_text()[-3000:]
            app.send_task("tasks.mark", args=["after"])
            app.close()
            assert wait_for(lambda: setup.records("mark"), 20), \
                worker.log_path.read_text()[-3000:]
            proxy.close()
        assert [r["tag"] for r in setup.records("started")] == ["once"], \
            worker.log_path.read_text()[-3000:]
    finally:
        setup.broker = amqp_url
        setup.cleanup()
        proxy.close()
