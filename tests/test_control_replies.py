"""Control replies and events come from anyone who can publish to the broker: they are decoded
as JSON only, whatever the app's ``accept_content``; a reply that is not JSON is an error of its
own and the other workers' replies are still shown. Fake nodes answer on the real Redis
and RabbitMQ."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from kombu.pidbox import Mailbox

from qtui.core import App
from qtui.core.control import MAILBOX_NAME, UNDECODABLE
from qtui.core.events import EventReceiver, event_exchange

from .test_commands import qtui


class Planted:
    """Unpickling this creates a file: proof that a reply was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (Path.touch, (self.path,))


@contextmanager
def fake_node(broker: str, hostname: str, serializer: str, reply: Any) -> Iterator[None]:
    """A pidbox node that answers every command with ``reply`` in ``serializer``."""
    mailbox = Mailbox(MAILBOX_NAME, type="fanout", serializer=serializer)
    stop = threading.Event()
    with Connection(broker) as conn:
        node = mailbox(conn).Node(hostname, handlers={"ping": lambda state, **kw: reply})
        node.channel = conn.channel()
        node.listen()
        # On Redis the node subscribes to the broadcast channel in its first drain_events, not in
        # listen(): drain once here so the subscription is in place before a test broadcasts
        # (under load the serving thread may not have run yet, and a publish to no subscriber
        # is gone).
        try:
            conn.drain_events(timeout=0.2)
        except TimeoutError:
            pass

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn.drain_events(timeout=0.1)
                except TimeoutError:
                    pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(5)


@pytest.mark.parametrize("accept", [["json"], ["json", "pickle"]])
def test_a_pickle_reply_is_an_error_and_never_unpickled(broker, unique, tmp_path, accept):
    url, _ = broker
    planted = tmp_path / "unpickled"
    good, evil = f"good-{unique}@test", f"evil-{unique}@test"
    app = App("client", broker=url, accept_content=accept)
    try:
        with ExitStack() as stack:
            stack.enter_context(fake_node(url, good, "json", {"ok": "pong"}))
            stack.enter_context(fake_node(url, evil, "pickle", Planted(planted)))
            replies = app.control.ping(destination=[good, evil], timeout=5)
    finally:
        app.close()
    assert not planted.exists()
    assert replies is not None
    by_worker = replies.by_worker()
    assert by_worker[good] == {"ok": "pong"}
    errors = [reply for name, reply in by_worker.items() if name.startswith(UNDECODABLE)]
    assert len(errors) == 1
    assert "not JSON (application/x-python-serialize)" in errors[0]["error"]


def test_a_pickle_event_is_dropped_never_unpickled_and_the_feed_goes_on(unique, tmp_path):
    planted = tmp_path / "unpickled"
    app = App("client", broker="memory://", accept_content=["json", "pickle"])
    try:
        with EventReceiver(app, wakeup=False) as receiver, Connection("memory://") as conn:
            exchange = event_exchange(conn)
            producer = conn.Producer()
            for body, serializer in ((Planted(planted), "pickle"),
                                     ({"type": "worker-heartbeat", "hostname": unique}, "json")):
                producer.publish(body, exchange=exchange, routing_key="worker.heartbeat",
                                 declare=[exchange], serializer=serializer)
            events = list(receiver.events(timeout=1))
    finally:
        app.close()
    assert not planted.exists()
    assert [e["hostname"] for e in events] == [unique]


def test_qtui_inspect_shows_the_good_replies_beside_the_undecodable_one(redis_url, unique,
                                                                        tmp_path, capsys):
    good, evil = f"good-{unique}@test", f"evil-{unique}@test"
    app = App("client", broker=redis_url)
    try:
        with fake_node(redis_url, good, "json", {"ok": "pong"}), \
                fake_node(redis_url, evil, "pickle", Planted(tmp_path / "unpickled")):
            status = qtui(app, "inspect", "ping", "-d", f"{good},{evil}", "-t", "5")
    finally:
        app.close()
    out = capsys.readouterr().out
    assert status == 1  # a worker replied with an error
    assert f"{good}: OK" in out and "pong" in out
    assert f"{UNDECODABLE}1: ERROR" in out and "not JSON" in out
