"""Pausing a queue across the cluster with ``qtui pause`` / ``qtui resume``, against real
workers: running ones stop consuming it, one started during the pause leaves it out, resume
gives it back to them and it drains. The pause lives in the broker (a Redis hash, the embedded
broker's tables, a RabbitMQ stream); a kombu transport with no such place says so."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import amqp
import pytest
import redis
from kombu import Connection, Queue

from qtui.core import App
from qtui.core.brokers.amqp import pauses as amqp_pauses
from qtui.core.brokers.amqp.pauses import PauseStream, PausesUnavailable, lock_name
from qtui.core.brokers.amqp.queues import AmqpQueues
from qtui.core.control import Replies
from qtui.core.pauses import Pause, leave_out_paused, paused_queues, reapply
from qtui.core.queues import QueueInspectionError, inspector_for, queue_exists
from qtui.tui.cli import main
from qtui.workers.consumer import Consumer

from .processes import celery_worker, running, write_module
from .services import STALE_PAUSE, reset_pause_stream
from .worker_helpers import Setup, hostname_of, make_setup, wait_for


@pytest.fixture(params=["redis", "sqlite", "rabbitmq"])
def setup(request, tmp_path, unique, redis_url):
    yield from _made_setup(request, tmp_path, unique, redis_url)


@pytest.fixture(params=["redis", "sqlite"])
def listing_setup(request, tmp_path, unique, redis_url):
    """Brokers that list every queue (RabbitMQ does only with its management API)."""
    yield from _made_setup(request, tmp_path, unique, redis_url)


def _made_setup(request, tmp_path, unique, redis_url) -> Iterator[Setup]:
    broker = {"redis": redis_url, "sqlite": f"sqlite://{tmp_path}/broker.sqlite",
              "rabbitmq": "amqp"}[request.param]
    if broker == "amqp":
        broker = request.getfixturevalue("amqp_url")
    made = make_setup(tmp_path, f"qp-{unique}", broker, None)
    yield made
    with inspector_for(made.app()) as inspector:
        inspector.resume(made.queue)
    if request.param == "rabbitmq":
        _delete_queues(broker, f"{made.queue}-side")
    made.cleanup()


def _delete_queues(broker: str, *names: str) -> None:
    with Connection(broker) as conn:
        for name in names:
            channel = conn.channel()
            channel.queue_delete(name)
            channel.close()


def _consumes(app, hostname: str, queue: str) -> bool:
    reply = app.control.inspect(destination=[hostname], timeout=1.0).active_queues() or {}
    return any(q.get("name") == queue for q in reply.get(hostname) or ())


def _depth(app, queue: str) -> int | None:
    with inspector_for(app) as inspector:
        return {q.name: q.messages for q in inspector.poll([queue]).queues}[queue]


def _sync(setup: Setup, app, tag: str, count: int = 1) -> None:
    """Run a task through the side queue every worker consumes, and wait for it: what the
    workers fetched before it, they fetched."""
    app.send_task("tasks.mark", args=[tag], queue=f"{setup.queue}-side")
    assert any(r["tag"] == tag for r in setup.wait_records("mark", count))


@pytest.mark.timeout(180)
def test_a_paused_queue_is_left_by_running_and_new_workers_until_resumed(setup, capsys):
    queue, side = setup.queue, f"{setup.queue}-side"
    app = setup.app()
    first, second = hostname_of(setup, "w1"), hostname_of(setup, "w2")
    with setup.worker("-Q", f"{queue},{side}", name="w1"):
        assert wait_for(lambda: _consumes(app, first, queue))
        assert main(["-b", setup.broker, "pause", queue]) == 0
        said = capsys.readouterr().out
        assert "paused since" in said and first in said
        assert wait_for(lambda: not _consumes(app, first, queue))

        app.send_task("tasks.mark", args=["paused"], queue=queue)
        _sync(setup, app, "side-1")
        with setup.worker("-Q", f"{queue},{side}", name="w2") as late:
            assert "is paused" in late.log_path.read_text()
            assert not _consumes(app, second, queue) and _consumes(app, second, side)
            _sync(setup, app, "side-2", count=2)
            assert _depth(app, queue) == 1
            assert paused_queues(app)[queue].consumers == (first, second)

            assert main(["-b", setup.broker, "resume", queue]) == 0
            assert f"given back to {first}, {second}" in capsys.readouterr().out
            assert wait_for(lambda: _consumes(app, first, queue) and _consumes(app, second, queue))
            assert any(r["tag"] == "paused" for r in setup.wait_records("mark", 3))
    assert _depth(app, queue) == 0 and queue not in paused_queues(app)


def test_qtui_queues_shows_a_paused_queue_and_its_oldest_message(setup, capsys):
    app = setup.app()
    app.send_task("tasks.mark", args=["waiting"], queue=setup.queue)
    assert main(["-b", setup.broker, "pause", setup.queue, "--timeout", "0.2"]) == 0
    capsys.readouterr()
    assert main(["-b", setup.broker, "queues", "--json", "--timeout", "0.2"]) == 0
    [row] = [r for r in json.loads(capsys.readouterr().out)["queues"] if r["name"] == setup.queue]
    assert row["messages"] == 1 and row["paused"]["by"]
    if setup.broker.startswith("amqp"):  # RabbitMQ cannot read a queue's head: age unknown
        assert row["oldest_age"] is None
    else:
        assert row["oldest_age_exact"] is True and row["oldest_age"] >= 0


def test_resuming_a_queue_that_is_not_paused_says_so(setup, capsys):
    assert main(["-b", setup.broker, "resume", setup.queue, "--timeout", "0.2"]) == 1
    assert "was not paused" in capsys.readouterr().out


def test_a_transport_with_no_place_for_a_pause_says_what_to_do(unique, capsys):
    assert main(["-b", "memory://", "pause", f"qp-{unique}", "--timeout", "0.2"]) == 1
    assert "cancel_consumer" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_a_pause_outlives_a_worker_restart(setup, capsys):
    app = setup.app()
    hostname = hostname_of(setup)
    with setup.worker():
        assert wait_for(lambda: _consumes(app, hostname, setup.queue))
        assert main(["-b", setup.broker, "pause", setup.queue, "-t", "1"]) == 0
        assert wait_for(lambda: not _consumes(app, hostname, setup.queue))
    app.send_task("tasks.mark", args=["held"], queue=setup.queue)
    with setup.worker() as restarted:
        assert "is paused" in restarted.log_path.read_text()
        assert not _consumes(app, hostname, setup.queue) and _depth(app, setup.queue) == 1
        assert main(["-b", setup.broker, "resume", setup.queue, "-t", "1"]) == 0
        assert any(r["tag"] == "held" for r in setup.wait_records("mark", 1))


CELERY_TASKS = """
from celery import Celery

app = Celery("celerytasks", broker="{broker}")

@app.task(name="celerytasks.add")
def add(x, y):
    return x + y
"""


@pytest.fixture(params=["redis", "rabbitmq"])
def celery_broker(request) -> str:
    return request.getfixturevalue("redis_url" if request.param == "redis" else "amqp_url")


@pytest.mark.timeout(240)
def test_a_celery_worker_is_told_again_after_a_restart_while_pause_watch_runs(
        tmp_path, unique, celery_broker, redis_url):
    celery = pytest.importorskip("celery")
    assert celery
    write_module(tmp_path, "celerytasks", CELERY_TASKS.format(broker=celery_broker))
    queue = f"qp-celery-{unique}"
    hostname = f"celery-{queue}@{socket.gethostname()}"
    app = App("client", broker=celery_broker)
    watch_argv = [sys.executable, "-m", "qtui.tui.cli", "-b", celery_broker, "pause", queue,
                  "--watch"]
    try:
        with ExitStack() as stack:
            with celery_worker(tmp_path, "celerytasks", queue):
                assert wait_for(lambda: _consumes(app, hostname, queue))
                watch = stack.enter_context(
                    running(watch_argv, tmp_path, ready="watching for workers"))
                assert wait_for(lambda: not _consumes(app, hostname, queue))
            with celery_worker(tmp_path, "celerytasks", queue):  # the same worker, restarted
                assert wait_for(lambda: "told to stop consuming" in watch.log_path.read_text())
                assert wait_for(lambda: not _consumes(app, hostname, queue))
                app.send_task("celerytasks.add", args=[1, 2], queue=queue)
                assert main(["-b", celery_broker, "resume", queue]) == 0
                assert wait_for(lambda: _consumes(app, hostname, queue))
                assert wait_for(lambda: _depth(app, queue) == 0)
                assert watch.wait(30) == 0  # the watch ends with the pause
    finally:
        with inspector_for(app) as inspector:
            inspector.resume(queue)
            inspector.purge(queue)
        if celery_broker.startswith("amqp"):
            _delete_queues(celery_broker, queue)
        app.close()


@pytest.fixture
def stream(amqp_url, unique):
    """A pause stream of this test's own, with the sizes qtui uses: on this shared RabbitMQ no
    test makes its stream roll segments (RabbitMQ 3.10's retention crashed the node under
    tiny segments: the truncation test runs on a node of its own)."""
    with Connection(amqp_url) as conn:
        made = PauseStream(conn, f"qp-stream-{unique}")
        yield made
        made.delete()


def test_writers_changing_the_pauses_at_once_lose_none_of_the_changes(stream, amqp_url):
    def pause_each(prefix: str) -> None:
        with Connection(amqp_url) as conn:
            mine = PauseStream(conn, stream.name)
            for n in range(15):
                mine.change(lambda pauses, n=n: {
                    **pauses, f"{prefix}{n}": Pause(f"{prefix}{n}", 0.0, prefix)})
    threads = [threading.Thread(target=pause_each, args=(prefix,)) for prefix in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(stream.read()) == 30


def test_a_writer_kept_from_the_lock_says_so_and_gets_it_once_its_holder_is_gone(
        stream, amqp_url, monkeypatch):
    monkeypatch.setattr(amqp_pauses, "LOCK_TIMEOUT", 0.5)
    with Connection(amqp_url) as holder:  # another writer, stuck while holding the lock
        holder.channel().queue_declare(queue=lock_name(stream.name), exclusive=True,
                                       auto_delete=True)
        with pytest.raises(PausesUnavailable, match="another qtui"):
            stream.change(lambda pauses: {**pauses, "q": Pause("q", 0.0, "me")})
    stream.change(lambda pauses: {**pauses, "q": Pause("q", 0.0, "me")})
    assert list(stream.read()) == ["q"]


def _make_empty(stream: PauseStream) -> None:
    """Make the stream as a writer that died before its first record would have left it."""
    channel = stream.connection.channel()
    channel.queue_declare(queue=stream.name, durable=True, auto_delete=False,
                          arguments=stream.arguments)
    channel.close()


def _publish_record(stream: PauseStream, record: bytes) -> None:
    channel = stream.connection.channel()
    channel.confirm_select()
    channel.basic_publish(amqp.Message(record), exchange="", routing_key=stream.name)
    channel.close()


@pytest.fixture
def own_stream(stream, monkeypatch) -> PauseStream:
    """Every inspector (the CLI's, a worker's) keeps its pauses in this test's stream."""
    monkeypatch.setattr(AmqpQueues, "pause_stream", stream.name)
    return stream


def test_a_worker_whose_pause_read_fails_waits_and_connects_once_it_reads(
        own_stream, amqp_url, unique, monkeypatch, caplog):
    monkeypatch.setattr(amqp_pauses, "READ_TIMEOUT", 0.3)
    _make_empty(own_stream)  # a stream that sends no record: the pauses cannot be read
    queue = f"qp-{unique}"
    app = App("worker", broker=amqp_url, worker_enable_remote_control=False)
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the wait before trying again: the stream heals
        slept.append(seconds)
        _publish_record(own_stream, json.dumps({}).encode())

    consumer = Consumer(app, "w@h", [Queue(queue)], lambda *_: None, lambda *_: None,
                        held_tags=list, stopping=lambda: False, sleep=sleep,
                        control_node=None)  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.ERROR, logger="qtui.worker"):
            consumer.connect(prefetch=1)
        assert len(slept) == 1 and "sent no record" in caplog.text
        assert consumer.consuming and [q.name for q in consumer.queues] == [queue]
    finally:
        consumer.close()
        _delete_queues(amqp_url, queue)
        app.close()


def test_a_stream_that_sends_no_record_is_an_error_not_an_empty_pause_set(
        stream, monkeypatch):
    monkeypatch.setattr(amqp_pauses, "READ_TIMEOUT", 0.5)
    _make_empty(stream)
    with pytest.raises(PausesUnavailable, match="resumes EVERY paused queue") as raised:
        stream.read()
    assert "rabbitmqctl list_queues name messages" in str(raised.value)
    with pytest.raises(PausesUnavailable):
        stream.change(lambda pauses: {**pauses, "q": Pause("q", 0.0, "me")})


def test_resuming_or_noting_on_a_broker_with_no_pause_stream_makes_none(own_stream, amqp_url):
    with inspector_for(App("client", broker=amqp_url)) as inspector:
        assert inspector.resume("q") is None
        inspector.note_paused_consumer("q", "w@h")
        assert inspector.pauses() == {}
        assert not queue_exists(inspector.connection, own_stream.name)


def test_a_queue_poll_stands_when_the_pauses_cannot_be_read_and_says_why(
        own_stream, amqp_url, unique, monkeypatch):
    monkeypatch.setattr(amqp_pauses, "READ_TIMEOUT", 0.3)
    _make_empty(own_stream)
    queue = f"qp-{unique}"
    app = App("client", broker=amqp_url)
    try:
        app.send_task("tasks.mark", args=["waiting"], queue=queue)
        with inspector_for(app) as inspector:
            poll = inspector.poll([queue])
        assert {q.name: q.messages for q in poll.queues}[queue] == 1
        assert poll.paused == {} and "sent no record" in poll.pause_error
    finally:
        _delete_queues(amqp_url, queue)
        app.close()


def test_a_queue_poll_stands_when_the_stream_goes_between_its_declare_and_its_read(
        own_stream, amqp_url, monkeypatch):
    """The stream deleted after the passive declare: the consume answers 404 (a channel
    error, as a user without read permission gets 403)."""
    monkeypatch.setattr(amqp_pauses, "queue_exists", lambda connection, name: True)
    with inspector_for(App("client", broker=amqp_url)) as inspector:
        poll = inspector.poll()
    assert poll.paused == {} and "NOT_FOUND" in poll.pause_error


def test_qtui_queues_shows_the_depths_and_why_the_pauses_are_unknown(
        own_stream, amqp_url, unique, monkeypatch, capsys):
    monkeypatch.setattr(amqp_pauses, "READ_TIMEOUT", 0.3)
    _make_empty(own_stream)
    queue = f"qp-{unique}"
    app = App("client", broker=amqp_url, task_queues={queue: {}})
    try:
        app.send_task("tasks.mark", args=["waiting"], queue=queue)
        assert main(["-b", amqp_url, "queues", "--json", "-t", "0.2"]) == 0
        said = json.loads(capsys.readouterr().out)
        assert "sent no record" in said["pause_error"]
        assert main(["-b", amqp_url, "queues", "-t", "0.2"]) == 0
        assert "sent no record" in capsys.readouterr().err
    finally:
        _delete_queues(amqp_url, queue)
        app.close()


def test_a_worker_that_cannot_note_itself_for_the_resume_still_leaves_the_queue_out(
        own_stream, amqp_url, unique, monkeypatch, caplog):
    monkeypatch.setattr(amqp_pauses, "LOCK_TIMEOUT", 0.3)
    queue = f"qp-{unique}"
    own_stream.change(lambda pauses: {queue: Pause(queue, 0.0, "me")})
    app = App("worker", broker=amqp_url)
    try:
        with Connection(amqp_url) as holder:  # a writer stuck holding the lock
            holder.channel().queue_declare(queue=lock_name(own_stream.name), exclusive=True,
                                           auto_delete=True)
            with caplog.at_level(logging.WARNING, logger="qtui.core.pauses"):
                assert leave_out_paused(app, [queue, f"{queue}-other"], "w@h") == {queue}
        assert "not noted for the resume" in caplog.text and "another qtui" in caplog.text
    finally:
        app.close()


def test_a_worker_refused_the_lock_by_a_channel_error_still_leaves_the_queue_out(
        own_stream, amqp_url, unique, caplog):
    """A channel error (here 406: the lock's name taken by a queue of other arguments; 403
    for a user without write permission) is not a lost connection: the connect goes on."""
    queue = f"qp-{unique}"
    own_stream.change(lambda pauses: {queue: Pause(queue, 0.0, "me")})
    app = App("worker", broker=amqp_url)
    with Connection(amqp_url) as conn:
        conn.channel().queue_declare(queue=lock_name(own_stream.name), auto_delete=False)
    try:
        with caplog.at_level(logging.WARNING, logger="qtui.core.pauses"):
            assert leave_out_paused(app, [queue], "w@h") == {queue}
        assert "not noted for the resume" in caplog.text
    finally:
        _delete_queues(amqp_url, lock_name(own_stream.name))
        app.close()


@pytest.mark.timeout(60)
def test_a_writer_frozen_holding_the_lock_loses_it_and_cannot_append_after(
        stream, amqp_url, monkeypatch):
    """Its connection's heartbeat stops: RabbitMQ closes it, which frees the lock; the
    writer's append, once it wakes, goes nowhere."""
    monkeypatch.setattr(amqp_pauses, "LOCK_HEARTBEAT", 1)
    frozen, woke = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def freeze(pauses):
        frozen.set()
        woke.wait(60)
        return {**pauses, "late": Pause("late", 0.0, "frozen")}

    def frozen_writer() -> None:
        with Connection(amqp_url) as conn:
            try:
                PauseStream(conn, stream.name).change(freeze)
            except Exception as exc:  # noqa: BLE001 - what its append met, checked below
                failed.append(exc)
    thread = threading.Thread(target=frozen_writer)
    thread.start()
    try:
        assert frozen.wait(10)
        stream.change(lambda pauses: {**pauses, "q": Pause("q", 0.0, "me")})
    finally:
        woke.set()
        thread.join(30)
    assert failed and list(stream.read()) == ["q"]


def test_a_node_that_refuses_the_stream_consumer_is_told_about_replicas_at_once(
        stream, monkeypatch):
    """406 on a stream consumer (here: no prefetch; in a cluster: no replica on this node)
    is tried again for a moment only, then said with what to do."""
    stream.change(lambda pauses: {"q": Pause("q", 0.0, "me")})
    consumes: list[str] = []
    original = amqp.Channel.basic_consume

    def consume_without_prefetch(channel, queue, *args, **kwargs):
        consumes.append(queue)
        channel.basic_qos(0, 0, False)  # RabbitMQ refuses a stream consumer without one
        return original(channel, queue, *args, **kwargs)
    monkeypatch.setattr(amqp.Channel, "basic_consume", consume_without_prefetch)
    with pytest.raises(PausesUnavailable, match="add_replica"):
        stream.read()
    assert 1 < len(consumes) <= 10


def test_a_rabbitmq_that_will_not_make_the_stream_says_what_pausing_needs(stream):
    stream.arguments = {**stream.arguments, "x-queue-type": "no-such-type"}  # as before 3.9
    with pytest.raises(QueueInspectionError, match="needs streams"):
        stream.change(lambda pauses: {**pauses, "q": Pause("q", 0.0, "me")})


def test_a_broker_with_no_pause_stream_has_no_pauses(amqp_url, unique):
    with Connection(amqp_url) as conn:
        assert PauseStream(conn, f"qp-none-{unique}").read() == {}


def test_a_test_run_starting_keeps_the_pause_of_a_test_of_another_run(stream, amqp_url):
    """A run starts the shared pause stream again once it has grown (conftest); other runs use
    the same RabbitMQ meanwhile: a pause of theirs must outlive it, or the worker their test
    starts next consumes the paused queue."""
    stream.change(lambda pauses: {"q": Pause("q", time.time(), "another run")})
    reset_pause_stream(amqp_url, reset_at=0, name=stream.name)
    assert list(stream.read()) == ["q"]


def test_a_test_run_starting_deletes_a_grown_stream_whose_pauses_are_stale(stream, amqp_url):
    """Only pauses older than any test left in it (a run killed mid-test): it starts again."""
    stream.change(lambda pauses: {"q": Pause("q", time.time() - STALE_PAUSE - 1, "a dead run")})
    reset_pause_stream(amqp_url, reset_at=0, name=stream.name)
    assert not queue_exists(stream.connection, stream.name)


def test_qtui_queues_is_readable_at_80_columns_when_piped(listing_setup, capsys, monkeypatch):
    setup = listing_setup
    monkeypatch.setenv("COLUMNS", "80")
    app = setup.app()
    app.send_task("tasks.mark", args=["waiting"], queue=setup.queue)
    assert main(["-b", setup.broker, "queues", "-t", "0.2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    header = next(line for line in lines if "queue" in line and "oldest" in line)
    for column in ("depth", "oldest", "sched", "dead", "consumers", "paused"):
        assert column in header
    assert any(setup.queue[:10] in line for line in lines)


@pytest.mark.timeout(120)
def test_a_worker_whose_only_queue_is_paused_waits_and_takes_it_on_resume(setup, capsys):
    app = setup.app()
    hostname = hostname_of(setup)
    assert main(["-b", setup.broker, "pause", setup.queue, "-t", "0.2"]) == 0
    app.send_task("tasks.mark", args=["held"], queue=setup.queue)
    with setup.worker() as worker:
        assert "is paused" in worker.log_path.read_text()
        assert wait_for(
            lambda: hostname in (app.control.ping(timeout=0.5) or Replies()).by_worker())
        assert not _consumes(app, hostname, setup.queue) and _depth(app, setup.queue) == 1
        assert main(["-b", setup.broker, "resume", setup.queue, "-t", "1"]) == 0
        assert hostname in capsys.readouterr().out
        assert any(r["tag"] == "held" for r in setup.wait_records("mark", 1))
        assert worker.poll() is None


def test_a_worker_that_came_online_is_asked_what_it_consumes_until_it_answers(
        redis_url, unique, monkeypatch):
    """Celery sends worker-online before its remote control listens, so the first ask may get no
    reply: the pause is still applied once the worker answers (it was not, and a Celery worker
    restarted under `qtui pause --watch` kept consuming the paused queue)."""
    queue = f"qp-{unique}"
    app = App("client", broker=redis_url)
    answers = iter([None, {"w@h": [{"name": queue}]}])
    cancelled: list[str] = []

    class Inspect:
        def active_queues(self):
            return next(answers)
    monkeypatch.setattr(app.control, "inspect", lambda **options: Inspect())
    monkeypatch.setattr(app.control, "cancel_consumer",
                        lambda name, **options: cancelled.append(name))
    try:
        with inspector_for(app) as inspector:
            inspector.pause(Pause(queue, time.time(), "me"))
        reapply(app, "w@h", timeout=0.1)
        assert cancelled == [queue] and paused_queues(app)[queue].consumers == ("w@h",)
    finally:
        with inspector_for(app) as inspector:
            inspector.resume(queue)
        app.close()


def test_under_a_global_key_prefix_a_paused_queue_notes_its_workers(redis_url, unique):
    """kombu prefixes only a script's first key: the note must not prefix it twice."""
    prefix, queue = f"pfx-{unique}:", f"qp-{unique}"
    app = App("client", broker=redis_url,
              broker_transport_options={"global_keyprefix": prefix})
    try:
        with inspector_for(app) as inspector:
            inspector.pause(Pause(queue, time.time(), "me", ("w1",)))
            inspector.note_paused_consumer(queue, "w2")
            assert inspector.pauses()[queue].consumers == ("w1", "w2")
            resumed = inspector.resume(queue)
        assert resumed is not None and resumed.consumers == ("w1", "w2")
    finally:
        app.close()
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"*{unique}*"):
            client.delete(key)
