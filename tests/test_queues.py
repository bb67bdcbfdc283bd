"""Queue inspection per broker: Redis (priority lists, queues found without a consumer), AMQP
(passive declare, the management API), qtui's embedded SQLite broker, and any other transport.

The RabbitMQ management plugin is not enabled on the test machine: the management client is
tested against a local HTTP server that answers with a recorded ``/api/queues`` reply.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kombu import Connection

from qtui.core import App
from qtui.core.brokers.amqp.queues import (
    AmqpQueues,
    fetch_management_queues,
    parse_management_queues,
)
from qtui.core.brokers.redis.queues import RedisQueues
from qtui.core.brokers.sqlite.queues import SqliteQueues
from qtui.core.pauses import Pause
from qtui.core.queues import (
    LISTING_REUSE,
    DeclaredQueues,
    QueueInfo,
    QueueInspectionError,
    inspector_for,
    is_internal,
)

from .test_control import delete_queues

#: Recorded from RabbitMQ 3.10's ``GET /api/queues/?columns=name,vhost,messages_ready,
#: messages_unacknowledged,consumers`` (two vhosts); "fresh" was declared a moment before, so
#: its message stats were not collected yet.
MANAGEMENT_SAMPLE = [
    {"consumers": 1, "messages_ready": 0, "messages_unacknowledged": 4, "name": "celery",
     "vhost": "/"},
    {"consumers": 0, "messages_ready": 10, "messages_unacknowledged": 0, "name": "reports",
     "vhost": "/"},
    {"consumers": 1, "messages_ready": 0, "messages_unacknowledged": 0,
     "name": "celeryev.5d4c2a1e-93d7-4f0e-a7c8-2f0b1c0f7a11", "vhost": "/"},
    {"consumers": 1, "messages_ready": 0, "messages_unacknowledged": 0,
     "name": "celery@vm.celery.pidbox", "vhost": "/"},
    {"consumers": 0, "messages_ready": 3, "messages_unacknowledged": 0, "name": "other-vhost",
     "vhost": "prod"},
    {"consumers": 0, "name": "fresh", "vhost": "/"},
]


def send(app: App, queue: str, priorities: list[int]) -> None:
    for priority in priorities:
        app.send_task("tasks.add", args=[1, 2], queue=queue, priority=priority)


def delete_prefixed(redis_url: str, prefix: str) -> None:
    """Every key under ``prefix``: what a test under a global key prefix made."""
    with Connection(redis_url) as conn:
        client = conn.default_channel.client
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)


def find(queues: list[QueueInfo], name: str) -> QueueInfo | None:
    return next((q for q in queues if q.name == name), None)


# Redis -------------------------------------------------------------------------------------------
@pytest.fixture
def redis_app(redis_url, unique):
    app = App("client", broker=redis_url, task_default_queue=f"qi-{unique}")
    yield app
    app.close()
    delete_queues(redis_url, f"qi-{unique}")


def test_redis_lists_a_queue_nobody_consumes_with_every_priority_counted(redis_app):
    queue = redis_app.conf.task_default_queue
    send(redis_app, queue, [0, 3, 6, 9, 9])
    with inspector_for(redis_app) as inspector:
        assert isinstance(inspector, RedisQueues) and inspector.lists_all
        assert find(inspector.queues(), queue) == QueueInfo(queue, 5, None)


def test_redis_leaves_out_the_protocols_own_queues(redis_app):
    send(redis_app, redis_app.conf.task_default_queue, [0])
    redis_app.control.ping(timeout=0.2)  # leaves a reply queue behind
    with inspector_for(redis_app) as inspector:
        names = [q.name for q in inspector.queues()]
    assert redis_app.conf.task_default_queue in names
    assert not [name for name in names if is_internal(name)]


def test_redis_reports_a_named_empty_queue_as_empty(redis_app, unique):
    with inspector_for(redis_app) as inspector:
        assert find(inspector.queues([f"never-{unique}"]), f"never-{unique}") == QueueInfo(
            f"never-{unique}", 0, None)


def test_redis_honours_the_global_key_prefix(redis_url, unique):
    app = App("client", broker=redis_url, task_default_queue=f"qp-{unique}",
              broker_transport_options={"global_keyprefix": f"pfx-{unique}:"})
    try:
        send(app, f"qp-{unique}", [0, 9])
        with inspector_for(app) as inspector:
            assert find(inspector.queues(), f"qp-{unique}") == QueueInfo(f"qp-{unique}", 2)
            assert inspector.purge(f"qp-{unique}") == 2
    finally:
        app.close()
        delete_prefixed(redis_url, f"pfx-{unique}:")


def test_a_redis_poll_honours_the_global_key_prefix(redis_url, unique):
    queue = f"qp-{unique}"
    app = App("client", broker=redis_url, task_default_queue=queue,
              broker_transport_options={"global_keyprefix": f"pfx-{unique}:"})
    try:
        send(app, queue, [0, 9])
        with inspector_for(app) as inspector:
            inspector.pause(Pause(queue, 1.0, "me"))
            poll = inspector.poll([queue], listing_reuse=LISTING_REUSE)
        assert find(poll.queues, queue) == QueueInfo(queue, 2, scheduled=0)
        assert len(poll.heads[queue]) == 2 and list(poll.paused) == [queue]
    finally:
        app.close()
        delete_prefixed(redis_url, f"pfx-{unique}:")


def test_redis_purge_empties_every_priority_list(redis_app):
    queue = redis_app.conf.task_default_queue
    send(redis_app, queue, [0, 5, 9])
    with inspector_for(redis_app) as inspector:
        assert inspector.purge(queue) == 3
        assert find(inspector.queues([queue]), queue).messages == 0


# RabbitMQ ----------------------------------------------------------------------------------------
@pytest.fixture
def amqp_app(amqp_url, unique):
    app = App("client", broker=amqp_url, task_default_queue=f"qi-{unique}")
    yield app
    app.close()
    delete_queues(amqp_url, f"qi-{unique}")


def test_amqp_counts_messages_and_consumers_of_a_named_queue(amqp_app):
    queue = amqp_app.conf.task_default_queue
    send(amqp_app, queue, [0, 0, 0])
    with inspector_for(amqp_app) as inspector:
        assert isinstance(inspector, AmqpQueues) and not inspector.lists_all
        assert inspector.queues([queue]) == [QueueInfo(queue, 3, 0)]
    with Connection(amqp_app.broker_url) as conn:
        with conn.Consumer(amqp_app.router.queues[queue], callbacks=[], prefetch_count=1):
            with inspector_for(amqp_app) as inspector:
                assert inspector.queues([queue])[0].consumers == 1


def test_amqp_reports_an_absent_queue_as_empty(amqp_app, unique):
    with inspector_for(amqp_app) as inspector:
        assert inspector.queues([f"absent-{unique}", f"absent2-{unique}"]) == [
            QueueInfo(f"absent-{unique}", 0, 0), QueueInfo(f"absent2-{unique}", 0, 0)]


def test_amqp_purge(amqp_app, unique):
    queue = amqp_app.conf.task_default_queue
    send(amqp_app, queue, [0, 0])
    with inspector_for(amqp_app) as inspector:
        assert inspector.purge(queue) == 2
        assert inspector.purge(f"absent-{unique}") == 0
        assert inspector.queues([queue]) == [QueueInfo(queue, 0, 0)]


# the RabbitMQ management API ---------------------------------------------------------------------
def test_management_replies_are_parsed_per_vhost():
    assert parse_management_queues(MANAGEMENT_SAMPLE, "/") == [
        QueueInfo("celery", 0, 1, 4),
        QueueInfo("celery@vm.celery.pidbox", 0, 1, 0),
        QueueInfo("celeryev.5d4c2a1e-93d7-4f0e-a7c8-2f0b1c0f7a11", 0, 1, 0),
        QueueInfo("fresh", None, 0, None),
        QueueInfo("reports", 10, 0, 0),
    ]
    assert parse_management_queues(MANAGEMENT_SAMPLE, "prod") == [
        QueueInfo("other-vhost", 3, 0, 0)]


def test_a_management_reply_that_is_not_a_list_is_an_error():
    with pytest.raises(QueueInspectionError, match="did not answer with a list"):
        parse_management_queues({"error": "not_authorised"})


class FakeManagement:
    """A local HTTP server answering ``/api/queues/<vhost>`` like RabbitMQ's management API."""

    def __init__(self, user: str = "guest", password: str = "guest",
                 sample: list[dict[str, object]] | None = None) -> None:
        payload = MANAGEMENT_SAMPLE if sample is None else sample
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.paths: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                fake.paths.append(self.path)
                if self.headers.get("Authorization") != expected:
                    self.send_response(401, "Unauthorized")
                    self.end_headers()
                    return
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def management() -> Iterator[FakeManagement]:
    server = FakeManagement()
    yield server
    server.close()


def test_the_management_client_asks_for_the_vhosts_queues_with_credentials(management):
    queues = fetch_management_queues(management.url, "/", userid="guest", password="guest")
    assert QueueInfo("reports", 10, 0, 0) in queues
    assert management.paths[0].startswith("/api/queues/%2F?columns=")


def test_credentials_in_the_management_url_win(management):
    url = management.url.replace("http://", "http://guest:guest@")
    assert fetch_management_queues(url, "/", userid="other", password="wrong")


def test_wrong_management_credentials_say_what_to_check(management):
    url = management.url.replace("http://", "http://guest:nope@")
    with pytest.raises(QueueInspectionError, match=r"guest:\*\*@.* answered 401") as failure:
        fetch_management_queues(url, "/")
    assert "nope" not in str(failure.value)


def test_an_unreachable_management_api_says_what_to_do():
    with pytest.raises(QueueInspectionError, match="rabbitmq_management plugin"):
        fetch_management_queues("http://127.0.0.1:1/", "/", timeout=2)


def test_with_the_management_api_rabbitmq_lists_every_queue(amqp_app, management):
    """Listed queues come from the API; a named queue it does not list is declared passively."""
    amqp_app.conf.broker_management_url = management.url
    queue = amqp_app.conf.task_default_queue
    send(amqp_app, queue, [0])
    with inspector_for(amqp_app) as inspector:
        assert inspector.lists_all
        queues = inspector.queues([queue])
    assert [q.name for q in queues] == ["celery", "fresh", queue, "reports"]
    assert find(queues, queue) == QueueInfo(queue, 1, 0)


def listed_with(app: App, names: list[str]) -> list[str]:
    """The queues ``app``'s inspector lists when the management API lists ``names`` too."""
    extra = [{"consumers": 0, "messages_ready": 0, "messages_unacknowledged": 0, "name": name,
              "vhost": "/"} for name in names]
    server = FakeManagement(sample=[*MANAGEMENT_SAMPLE, *extra])
    try:
        app.conf.broker_management_url = server.url
        with inspector_for(app) as inspector:
            return [q.name for q in inspector.queues()]
    finally:
        server.close()


def test_the_management_listing_leaves_out_rpc_reply_queues(amqp_app):
    reply = "9b2e4d7c-1f3a-4c8e-b5d6-0a7f3e2c1b9d"
    names = listed_with(amqp_app, [reply])
    assert "celery" in names and reply not in names


def test_the_management_listing_leaves_out_the_pause_stream_and_its_lock(amqp_app):
    names = listed_with(amqp_app, ["qtui.paused", "qtui.paused.lock"])
    assert "celery" in names and not any(name.startswith("qtui.paused") for name in names)


# the embedded SQLite broker and other transports -------------------------------------------------
def test_other_transports_look_named_queues_up(app_on_memory):
    queue = app_on_memory.conf.task_default_queue
    send(app_on_memory, queue, [0, 0])
    with inspector_for(app_on_memory) as inspector:
        assert isinstance(inspector, DeclaredQueues) and not inspector.lists_all
        assert inspector.queues([queue]) == [QueueInfo(queue, 2, None)]
        assert inspector.purge(queue) == 2


@pytest.fixture
def app_on_memory(unique):
    app = App("client", broker="memory://", task_default_queue=f"mem-{unique}")
    yield app
    app.close()


def test_the_embedded_broker_lists_a_queue_nobody_consumes(tmp_path, unique):
    app = App("client", broker=f"sqlite://{tmp_path / 'broker.sqlite'}",
              task_default_queue=f"sq-{unique}", result_backend=None)
    try:
        send(app, f"sq-{unique}", [0, 5, 9])
        with inspector_for(app) as inspector:
            assert isinstance(inspector, SqliteQueues) and inspector.lists_all
            assert find(inspector.queues(), f"sq-{unique}") == QueueInfo(f"sq-{unique}", 3,
                                                                         None, 0)
            assert inspector.purge(f"sq-{unique}") == 3
    finally:
        app.close()


def test_internal_queue_names():
    assert is_internal("celeryev.1f0e") and is_internal("celery@vm.celery.pidbox")
    assert is_internal("0d1f.reply.celery.pidbox")
    assert not is_internal("celery") and not is_internal("reports.daily")
    assert is_internal("9b2e4d7c-1f3a-4c8e-b5d6-0a7f3e2c1b9d")
    assert not is_internal("9b2e4d7c1f3a4c8eb5d60a7f3e2c1b9d-but-a-user-queue")


def test_the_delayed_stores_queues_are_not_listed_as_user_queues():
    """qtui's delay ladder and due queues are counted as their task queue's scheduled tasks."""
    assert is_internal("qtui.delay.reports.300s") and is_internal("qtui.due.reports")
    assert not is_internal("qtui-reports")


def test_the_sqlite_broker_lists_a_queue_with_its_held_eta_tasks_as_scheduled(tmp_path):
    app = App("client", broker=f"sqlite://{tmp_path}/broker.sqlite", task_default_queue="work")
    try:
        app.send_task("tasks.add", args=[1, 2], queue="qtui.due.work",
                      headers={"x-qtui-not-before": 4_000_000_000.0})
        with inspector_for(app) as inspector:
            listed = inspector.with_scheduled(inspector.queues(["work"]))
    finally:
        app.close()
    assert listed == [QueueInfo("work", 0, None, 0, scheduled=1)]
