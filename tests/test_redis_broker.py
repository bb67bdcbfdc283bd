"""qtui's Redis channel publishes in one round trip and routes exactly as kombu's does, and
subscribes to its fanout queues on demand (before the first poll)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from qtui.core.brokers.redis import channel as redis_broker

from .services import REDIS_HOST, REDIS_PORT
from .tcp_proxy import Interceptor, SilentProxy

pytestmark = pytest.mark.redis


@pytest.fixture
def names(unique: str, redis_url: str) -> Iterator[dict[str, str]]:
    found = {"exchange": f"ex-{unique}", "a": f"a-{unique}", "b": f"b-{unique}",
             "other": f"other-{unique}", "dead": f"dead-{unique}"}
    yield found
    client = redis.Redis.from_url(redis_url)
    client.delete(f"_kombu.binding.{found['exchange']}", f"_kombu.binding.{found['a']}", *(
        found[q] + suffix for q in ("a", "b", "other", "dead")
        for suffix in ("", "\x06\x163", "\x06\x166", "\x06\x169")))


def received(url: str, queue: str) -> list[object]:
    """Every message waiting on ``queue``, read with kombu's own Redis transport."""
    bodies = []
    with Connection(url) as conn:
        simple = conn.SimpleQueue(queue, no_ack=True)
        while True:
            try:
                bodies.append(simple.get(timeout=0.2).payload)
            except simple.Empty:
                break
        simple.close()
    return bodies


def bind(url: str, exchange: Exchange, queue: str, key: str) -> None:
    with Connection(url) as conn:
        Queue(queue, exchange, routing_key=key)(conn.default_channel).declare()


def test_a_direct_publish_reaches_every_queue_bound_with_its_key(redis_url, names):
    exchange = Exchange(names["exchange"], type="direct")
    bind(redis_url, exchange, names["a"], "key")
    bind(redis_url, exchange, names["b"], "key")
    bind(redis_url, exchange, names["other"], "other-key")
    with redis_broker.connection(redis_url) as conn:
        Producer(conn.default_channel).publish({"n": 1}, exchange=exchange, routing_key="key",
                                               declare=[exchange])
    assert received(redis_url, names["a"]) == [{"n": 1}]
    assert received(redis_url, names["b"]) == [{"n": 1}]
    assert received(redis_url, names["other"]) == []


def test_a_queue_bound_by_another_process_gets_the_next_message_at_once(redis_url, names):
    exchange = Exchange(names["exchange"], type="direct")
    bind(redis_url, exchange, names["a"], "key")
    with redis_broker.connection(redis_url) as conn:
        producer = Producer(conn.default_channel)
        producer.publish({"n": 1}, exchange=exchange, routing_key="key", declare=[exchange])
        bind(redis_url, exchange, names["b"], "key")
        producer.publish({"n": 2}, exchange=exchange, routing_key="key")
    assert received(redis_url, names["a"]) == [{"n": 1}, {"n": 2}]
    assert received(redis_url, names["b"]) == [{"n": 2}]


def test_a_message_with_a_priority_goes_to_kombus_priority_list(redis_url, names):
    exchange = Exchange(names["exchange"], type="direct")
    bind(redis_url, exchange, names["a"], "key")
    with redis_broker.connection(redis_url) as conn:
        Producer(conn.default_channel).publish({"n": 1}, exchange=exchange, routing_key="key",
                                               declare=[exchange], priority=6)
    client = redis.Redis.from_url(redis_url)
    assert client.llen(names["a"] + "\x06\x166") == 1
    assert received(redis_url, names["a"]) == [{"n": 1}]


def test_an_unroutable_message_goes_to_the_dead_letter_queue_as_with_kombu(redis_url, names):
    exchange = Exchange(names["exchange"], type="direct")
    bind(redis_url, exchange, names["a"], "key")
    with redis_broker.connection(redis_url, transport_options={
            "deadletter_queue": names["dead"]}) as conn:
        with pytest.warns(UserWarning, match="No queue"):
            Producer(conn.default_channel).publish({"n": 1}, exchange=exchange,
                                                   routing_key="nobody", declare=[exchange])
    assert received(redis_url, names["a"]) == []
    assert received(redis_url, names["dead"]) == [{"n": 1}]


def test_other_urls_keep_their_own_kombu_transport(tmp_path):
    conn = redis_broker.connection(f"sqlite://{tmp_path / 'b.sqlite'}")
    assert conn.transport_cls == "sqlite"
    assert redis_broker.connection("redis://127.0.0.1:6379/0").transport_cls \
        is redis_broker.Transport


def test_a_task_reaches_its_queue_after_redis_lost_the_binding_set(redis_url, names):
    """Redis restarted without persistence (or flushed) loses kombu's binding sets; a client
    that declared its queue before must not send into nowhere: a task with no explicit exchange
    goes straight to its queue, as Celery's client sends it."""
    from qtui.core import App

    queue = names["a"]
    app = App("client", broker=redis_url, backend=None, task_default_queue=queue)
    try:
        app.send_task("tasks.add", args=[1, 1])
        redis.Redis.from_url(redis_url).delete(f"_kombu.binding.{queue}")
        app.send_task("tasks.add", args=[2, 2])
    finally:
        app.close()
    assert redis.Redis.from_url(redis_url).llen(queue) == 2


def test_a_fanout_message_published_right_after_subscribe_now_is_received(redis_url, names):
    """kombu subscribes on the first poll; ``subscribe_now`` makes the subscription live before
    it, so a message published in between is not lost."""
    exchange = Exchange(names["exchange"], type="fanout")
    got: list[object] = []
    with redis_broker.connection(redis_url) as conn:
        channel = conn.channel()
        consumer = Consumer(channel, [Queue(names["a"], exchange, auto_delete=True)],
                            callbacks=[lambda body, message: got.append(body)], no_ack=True)
        consumer.consume()
        channel.subscribe_now(5.0)
        with redis_broker.connection(redis_url) as other:
            Producer(other.default_channel).publish({"n": 1}, exchange=exchange,
                                                    declare=[exchange])
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=0.5)
            except TimeoutError:
                pass
    assert got == [{"n": 1}]


def test_subscribe_now_gives_up_when_redis_does_not_confirm(names):
    """A subscription Redis never confirms (a half-open connection) is an error the caller
    reconnects on, not a wait for ever."""
    proxy = SilentProxy((REDIS_HOST, REDIS_PORT))
    try:
        with redis_broker.connection(f"redis://127.0.0.1:{proxy.port}/0") as conn:
            channel = conn.channel()
            exchange = Exchange(names["exchange"], type="fanout")
            Consumer(channel, [Queue(names["a"], exchange, auto_delete=True)],
                     no_ack=True).consume()
            proxy.silence()
            with pytest.raises(redis.exceptions.TimeoutError, match="did not confirm"):
                channel.subscribe_now(0.5)
    finally:
        proxy.close()


def push_socket(app) -> socket.socket:
    """The socket of the connection ``app``'s channel keeps for its one-at-a-time sends."""
    with app.producer() as producer:
        return producer.channel.__dict__["_push_connection"][1]._sock


class _OtherSocket(socket.socket):
    """A socket of another type than ``socket.socket``, as a TLS socket is."""


class _OtherSocketConnection(redis.connection.Connection):
    """A redis-py connection on an :class:`_OtherSocket`: the channel checks it as it checks
    a TLS one (through redis-py), with no TLS server needed."""

    def _connect(self) -> socket.socket:
        sock = super()._connect()
        timeout = sock.gettimeout()
        other = _OtherSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        other.settimeout(timeout)
        return other


@pytest.mark.parametrize("retry", [True, False])
@pytest.mark.parametrize("kind", ["plain", "tls-like"])
def test_a_send_after_redis_closed_the_push_connection_goes_out_on_a_new_one(
        redis_url, names, retry, kind, monkeypatch):
    """One-at-a-time sends push on a connection the channel keeps; one that Redis closed
    meanwhile (a restart, ``CLIENT KILL``, an idle timeout) is opened again before the next
    send, as a redis-py pool checkout does: the send goes out, with publish retries off too.
    On a socket that is not a plain one (TLS), redis-py's check raises for a closed
    connection instead of answering: that is a closed connection too."""
    from qtui.core import App

    if kind == "tls-like":
        monkeypatch.setattr(redis_broker.Channel, "connection_class", _OtherSocketConnection)
    queue = names["a"]
    app = App("client", broker=redis_url, backend=None, task_default_queue=queue,
              task_publish_retry=retry)
    try:
        app.send_task("tasks.add", args=[1, 1])
        held = push_socket(app)
        assert (type(held) is _OtherSocket) == (kind == "tls-like")
        host, port = held.getsockname()[:2]
        redis.Redis.from_url(redis_url).execute_command("CLIENT", "KILL", f"{host}:{port}")
        app.send_task("tasks.add", args=[2, 2])
        app.send_task("tasks.add", args=[3, 3])
    finally:
        app.close()
    assert [body[0] for body in received(redis_url, queue)] == [  # type: ignore[index]
        [1, 1], [2, 2], [3, 3]]


def test_a_send_with_a_socket_timeout_goes_out_on_the_connection_it_keeps(redis_url, names):
    """With ``socket_timeout`` set (redis-py gives the socket that timeout), checking that the
    kept push connection is still open neither waits for the timeout nor takes the live
    connection for one Redis closed: every send goes out on the same connection."""
    from qtui.core import App

    app = App("client", broker=redis_url, backend=None, task_default_queue=names["a"],
              task_publish_retry=False, broker_transport_options={"socket_timeout": 1})
    try:
        app.send_task("tasks.add", args=[1, 1])
        first = push_socket(app)
        host, port = first.getsockname()[:2]
        address = f"{host}:{port}"
        app.send_task("tasks.add", args=[2, 2])
        app.send_task("tasks.add", args=[3, 3])
        assert push_socket(app) is first
        assert first.fileno() != -1  # still open: never closed and opened again
        clients = redis.Redis.from_url(redis_url).client_list()
        assert address in [client["addr"] for client in clients]
    finally:
        app.close()
    assert len(received(redis_url, names["a"])) == 3


@pytest.mark.timeout(30)
@pytest.mark.parametrize("retry", [True, False])
def test_a_send_redis_never_answers_raises_broker_blocked_by_the_publish_timeout(
        names, retry):
    """A send on a connection that went silent (a half-open connection: no reply, no error)
    gives up at ``broker_publish_timeout``, retries included, with BrokerBlocked."""
    from qtui.core import App
    from qtui.core.exceptions import BrokerBlocked

    proxy = SilentProxy((REDIS_HOST, REDIS_PORT))
    app = App("client", broker=f"redis://127.0.0.1:{proxy.port}/0", backend=None,
              task_default_queue=names["a"], task_publish_retry=retry,
              broker_publish_timeout=1)
    try:
        app.send_task("tasks.add", args=[1, 1])
        proxy.silence()
        with pytest.raises(BrokerBlocked, match="broker_publish_timeout"):
            app.send_task("tasks.add", args=[2, 2])
    finally:
        app.close()
        proxy.close()


class _PushReplyCutter(Interceptor):
    """Forwards Redis traffic, but closes the connection that carried the first LPUSH in place
    of passing on Redis's reply to it: the push ran, its sender never hears so."""

    def __init__(self, port: int) -> None:
        self.cut = False
        super().__init__(port)

    def _up(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        while data := self._recv(client):
            if b"LPUSH" in data and not self.cut:
                self.cut = state["cut"] = True
            try:
                server.sendall(data)
            except OSError:
                return

    def _down(self, server: socket.socket, client: socket.socket, state: dict) -> None:
        while data := self._recv(server):
            if state.get("cut"):
                self._shut(client)
                return
            try:
                client.sendall(data)
            except OSError:
                return


@pytest.mark.timeout(30)
def test_a_send_whose_reply_is_lost_says_the_task_may_be_stored(redis_url, names):
    """With publish retries off, a connection lost after the push went out is not reported as
    an unreachable broker: the error says the task may be stored (it is)."""
    from qtui.core import App
    from qtui.core.exceptions import BrokerUnavailable

    proxy = _PushReplyCutter(REDIS_PORT)
    app = App("client", broker=f"redis://127.0.0.1:{proxy.port}/0", backend=None,
              task_default_queue=names["a"], task_publish_retry=False)
    try:
        with pytest.raises(BrokerUnavailable, match="may have stored it") as raised:
            app.send_task("tasks.add", args=[1, 1])
        assert "unreachable" not in str(raised.value)
    finally:
        app.close()
        proxy.close()
    assert [body[0] for body in received(redis_url, names["a"])] == [[1, 1]]  # type: ignore[index]


@pytest.mark.timeout(60)
def test_a_send_after_redis_went_away_is_retried_and_stored_once(tmp_path, unique):
    """A connection lost between two sends (Redis restarted) fails the next send's first
    attempt: the send is retried per ``task_publish_retry_policy`` on a new connection once
    Redis is back, and the broker holds each task once."""
    from qtui.core import App

    from .redis_server import redis_server, spare_port

    port = spare_port()
    url = f"redis://127.0.0.1:{port}/0"
    revived: list[object] = []
    policy = {"max_retries": 200, "interval_start": 0, "interval_step": 0.1,
              "interval_max": 0.1, "on_revive": revived.append}
    with ExitStack() as servers:
        first = servers.enter_context(redis_server(tmp_path, port))
        app = App("client", broker=url, backend=None, task_default_queue=unique,
                  task_publish_retry_policy=policy, broker_publish_timeout=30)
        try:
            sent = [app.send_task("tasks.add", args=[1, 1]).id]
            first.terminate()  # append-only with fsync always: the first task is kept
            first.wait(10)
            back = threading.Timer(0.5, lambda: servers.enter_context(
                redis_server(tmp_path, port)))
            back.start()
            sent.append(app.send_task("tasks.add", args=[2, 2]).id)
            back.join()
        finally:
            app.close()
        assert revived  # the first attempt failed: the send went through ensure's retries
        stored = redis.Redis.from_url(url).lrange(unique, 0, -1)
    assert [json.loads(item)["headers"]["id"] for item in reversed(stored)] == sent


def _envelope_with_header(queue: str, header: object) -> bytes:
    """A kombu envelope of body ``{"n": 1}`` on ``queue`` with a user header ``x``."""
    return json.dumps({
        "body": base64.b64encode(b'{"n": 1}').decode(), "content-encoding": "utf-8",
        "content-type": "application/json", "headers": {"x": header},
        "properties": {"delivery_tag": str(uuid.uuid4()), "body_encoding": "base64",
                       "delivery_info": {"exchange": "", "routing_key": queue}}}).encode()


@pytest.mark.parametrize("bad", ['{"__type__": "bytes", "__value__": 1}', "[" * 990 + "]" * 990],
                         ids=["typed", "deep"])
@pytest.mark.parametrize("read", ["consume", "get"])
def test_a_queue_item_python_cannot_decode_is_dropped_and_the_next_read(
        names, redis_url, read, bad):
    """A crafted ``{"__type__": "bytes", "__value__": 1}`` in the envelope made kombu's read
    (BRPOP or RPOP) raise an AttributeError out of ``drain_events``: a control reply so made
    ended ``qtui inspect``; arrays nested 990 deep, a RecursionError. It is dropped with a
    warning and the next message is read."""
    queue = names["a"]
    client = redis.Redis.from_url(redis_url)
    client.lpush(queue, _envelope_with_header(queue, "BAD").replace(b'"BAD"', bad.encode()),
                 _envelope_with_header(queue, "good"))
    got: list[object] = []
    with redis_broker.connection(redis_url) as conn:
        if read == "get":
            simple = conn.SimpleQueue(queue, no_ack=True)
            with pytest.raises(simple.Empty):
                simple.get(block=False)
            got.append(simple.get(block=False).headers["x"])
            simple.close()
        else:
            with Consumer(conn.default_channel, [Queue(queue, routing_key=queue)], no_ack=True,
                          accept=["json"], on_message=lambda m: got.append(m.headers["x"])):
                deadline = time.monotonic() + 5
                while not got and time.monotonic() < deadline:
                    try:
                        conn.drain_events(timeout=0.5)
                    except TimeoutError:
                        pass
    assert got == ["good"]
    assert client.llen(queue) == 0
