"""Remote control: qtui's ``app.control`` against a real Celery worker on Redis and RabbitMQ,
with Celery's names, arguments and reply shapes; and silent workers cost only their timeout.

Other suites may run Celery workers on the same brokers at the same time, so every assertion
looks at this module's worker (by hostname) and never at the whole set of replies.
"""

from __future__ import annotations

import inspect as pyinspect
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import pytest
from kombu import Connection

from qtui.core import App
from qtui.core.control import COMMANDS, Control, Inspect, Replies
from qtui.core.exceptions import BrokerUnavailable

from .processes import celery_worker, write_module
from .services import AMQP_HOST, AMQP_PORT, REDIS_HOST, REDIS_PORT, need

CELERY_TASKS = """
import time
from celery import Celery

app = Celery("tasks", broker={broker!r})
app.conf.task_default_queue = {queue!r}
app.conf.task_ignore_result = True

@app.task
def add(x, y):
    return x + y

@app.task
def fail(message):
    raise ValueError(message)

@app.task
def sleep(seconds):
    time.sleep(seconds)
    return seconds
"""

BROKERS = {
    "redis": f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
    "rabbitmq": f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}//",
}
HOST = socket.gethostname()
NOBODY = "celery-nobody@nowhere"
T = TypeVar("T")


def need_broker(name: str) -> str:
    if name == "redis":
        need("Redis", REDIS_HOST, REDIS_PORT)
    else:
        need("RabbitMQ", AMQP_HOST, AMQP_PORT)
    return BROKERS[name]


def delete_queues(broker: str, *names: str) -> None:
    with Connection(broker) as conn:
        for name in names:
            try:
                conn.channel().queue_delete(name)
            except Exception:  # noqa: BLE001 - already gone
                pass


class Cluster:
    """A real Celery worker's broker, queue and name, and a qtui app pointed at the same."""

    def __init__(self, broker: str, queue: str) -> None:
        self.broker = broker
        self.queue = queue
        self.hostname = f"celery-{queue}@{HOST}"
        self.app = App("tasks", broker=broker, task_default_queue=queue)


def start_celery(directory, broker: str, queue: str, pool: str = "prefork",
                 extra: list[str] | None = None):
    """A Celery worker (context manager) on its own queue, one pool process, events on."""
    write_module(directory, "tasks", CELERY_TASKS.format(broker=broker, queue=queue))
    return celery_worker(directory, "tasks", queue, pool=pool,
                         extra=["-E", "--concurrency", "1", *(extra or [])])


@pytest.fixture(scope="module", params=sorted(BROKERS))
def cluster(request, tmp_path_factory):
    """One Celery worker (prefork, one process, events on) per broker for the whole module."""
    broker = need_broker(request.param)
    queue = f"ctl-{uuid.uuid4().hex[:8]}"
    directory = tmp_path_factory.mktemp("celery")
    try:
        with start_celery(directory, broker, queue):
            cluster = Cluster(broker, queue)
            # Celery says "ready" before its first poll, when it subscribes to the mailbox on
            # Redis (qtui's worker subscribes first): a command sent in between is lost.
            eventually(lambda: cluster.app.control.ping(destination=[cluster.hostname],
                                                        timeout=1), "the worker listening")
            yield cluster
            cluster.app.close()
    finally:
        delete_queues(broker, queue, f"{queue}-extra")


def eventually(check: Callable[[], T], what: str, timeout: float = 60.0) -> T:
    """Poll ``check`` until it returns something true (workers act asynchronously)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def is_active(inspect: Inspect, cluster: Cluster, task_id: str) -> bool:
    return any(t["id"] == task_id for t in inspect.active()[cluster.hostname])


def mine(cluster: Cluster, replies: Replies | None) -> object:
    """This module's worker's reply out of everyone's."""
    assert replies is not None
    return replies.by_worker()[cluster.hostname]


# names, arguments and shapes are Celery's --------------------------------------------------------
CONTROL_METHODS = ["broadcast", "ping", "revoke", "terminate", "rate_limit", "time_limit",
                   "add_consumer", "cancel_consumer", "enable_events", "disable_events",
                   "heartbeat", "pool_grow", "pool_shrink", "autoscale", "shutdown"]
INSPECT_METHODS = ["ping", "stats", "active", "reserved", "scheduled", "revoked", "registered",
                   "query_task", "conf", "report", "active_queues", "clock"]


def _parameters(function) -> list[str]:
    return [name for name, p in pyinspect.signature(function).parameters.items()
            if p.kind is not p.VAR_KEYWORD]


@pytest.mark.parametrize("method", CONTROL_METHODS)
def test_control_methods_take_celerys_arguments(method):
    from celery.app.control import Control as CeleryControl
    ours = _parameters(getattr(Control, method))
    theirs = _parameters(getattr(CeleryControl, method))
    assert [p for p in theirs if p != "channel"] == ours


@pytest.mark.parametrize("method", INSPECT_METHODS)
def test_inspect_methods_take_celerys_arguments(method):
    """Celery's, in Celery's order; keyword-only ones may follow (query_task's ``safe``)."""
    from celery.app.control import Inspect as CeleryInspect
    ours = pyinspect.signature(getattr(Inspect, method)).parameters.values()
    assert [p.name for p in ours if p.kind is not p.KEYWORD_ONLY] == \
        _parameters(getattr(CeleryInspect, method))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_commands_match_the_celery_workers_panel(name):
    from celery.worker.control import Panel
    ours, theirs = COMMANDS[name], Panel.meta[name]
    assert ours.kind == theirs.type
    assert [arg for arg, _ in ours.args] == [arg for arg, _ in theirs.args or []]
    assert ours.variadic == theirs.variadic
    assert ours.signature == (theirs.signature or "")


def test_command_line_words_become_celerys_arguments():
    assert COMMANDS["rate_limit"].arguments(["tasks.add", "10/m"]) == {
        "task_name": "tasks.add", "rate_limit": "10/m"}
    assert COMMANDS["terminate"].arguments(["SIGKILL", "id1", "id2"]) == {
        "signal": "SIGKILL", "task_id": ["id1", "id2"]}
    assert COMMANDS["time_limit"].arguments(["tasks.add", "10", "20"]) == {
        "task_name": "tasks.add", "soft": 10.0, "hard": 20.0}
    assert COMMANDS["conf"].arguments(["true"]) == {"with_defaults": True}
    assert COMMANDS["pool_grow"].arguments([]) == {}


@pytest.mark.parametrize("command, words, message", [
    ("rate_limit", ["tasks.add"], "takes <task_name>"),
    ("ping", ["extra"], "unexpected 'extra'"),
    ("time_limit", ["tasks.add", "soon"], "bad soft 'soon'"),
    ("conf", ["maybe"], "not a boolean"),
])
def test_bad_command_line_words_say_what_is_expected(command, words, message):
    with pytest.raises(ValueError, match=message):
        COMMANDS[command].arguments(words)


# against a real Celery worker --------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_ping(cluster):
    replies = cluster.app.control.ping(timeout=2)
    assert isinstance(replies, list) and {cluster.hostname: {"ok": "pong"}} in replies
    assert replies.no_reply == ()


@pytest.mark.timeout(120)
def test_ping_of_a_named_worker_returns_as_soon_as_it_answers(cluster):
    replies = cluster.app.control.ping(destination=[cluster.hostname], timeout=30)
    assert replies == [{cluster.hostname: {"ok": "pong"}}]


@pytest.mark.timeout(120)
def test_a_missing_worker_is_no_reply_and_the_live_one_still_answers(cluster):
    replies = cluster.app.control.ping(destination=[cluster.hostname, NOBODY], timeout=2)
    assert replies == [{cluster.hostname: {"ok": "pong"}}]
    assert replies.no_reply == (NOBODY,)


@pytest.mark.timeout(120)
def test_inspect_of_only_missing_workers_is_none_and_names_them(cluster):
    inspect = cluster.app.control.inspect(destination=[NOBODY], timeout=1)
    assert inspect.stats() is None
    assert inspect.no_reply == (NOBODY,)


@pytest.mark.timeout(120)
def test_inspect_replies_have_celerys_shapes(cluster):
    inspect = cluster.app.control.inspect(destination=[cluster.hostname], timeout=10)
    assert inspect.ping() == {cluster.hostname: {"ok": "pong"}}
    stats = inspect.stats()[cluster.hostname]
    assert stats["pool"]["max-concurrency"] == 1 and "broker" in stats and "uptime" in stats
    for method in ("active", "reserved", "scheduled", "revoked"):
        assert isinstance(getattr(inspect, method)()[cluster.hostname], list), method
    assert "tasks.add" in inspect.registered()[cluster.hostname]
    assert inspect.query_task("no-such-id") == {cluster.hostname: {}}
    assert inspect.conf()[cluster.hostname]["task_default_queue"] == cluster.queue
    assert "celery" in inspect.report()[cluster.hostname]["ok"]
    queues = inspect.active_queues()[cluster.hostname]
    assert [q["name"] for q in queues] == [cluster.queue]
    assert isinstance(inspect.clock()[cluster.hostname]["clock"], int)


@pytest.mark.timeout(120)
def test_inspect_with_one_named_worker_returns_its_reply_alone(cluster):
    inspect = cluster.app.control.inspect(destination=cluster.hostname, timeout=10)
    assert inspect.ping() == {"ok": "pong"}


@pytest.mark.timeout(120)
def test_a_running_task_shows_in_active_and_query_task(cluster):
    result = cluster.app.send_task("tasks.sleep", args=[3])
    inspect = cluster.app.control.inspect(destination=[cluster.hostname], timeout=5)
    task = eventually(lambda: next((t for t in inspect.active()[cluster.hostname]
                                    if t["id"] == result.id), None), f"{result.id} active")
    assert task["name"] == "tasks.sleep" and task["args"] == [3]
    state, info = inspect.query_task(result.id)[cluster.hostname][result.id]
    assert state == "active" and info["id"] == result.id


@pytest.mark.timeout(120)
def test_rate_limit_changes_the_workers_task(cluster):
    replies = cluster.app.control.rate_limit("tasks.add", "10/m", reply=True,
                                             destination=[cluster.hostname], timeout=10)
    assert mine(cluster, replies) == {"ok": "new rate limit set successfully"}
    registered = cluster.app.control.inspect(destination=[cluster.hostname], timeout=10) \
        .registered("rate_limit")[cluster.hostname]
    assert "tasks.add [rate_limit=10/m]" in registered
    replies = cluster.app.control.rate_limit("tasks.nope", "1/s", reply=True,
                                             destination=[cluster.hostname], timeout=10)
    assert mine(cluster, replies) == {"error": "unknown task"}


@pytest.mark.timeout(120)
def test_time_limit(cluster):
    replies = cluster.app.control.time_limit("tasks.sleep", soft=10, hard=20, reply=True,
                                             destination=[cluster.hostname], timeout=10)
    assert mine(cluster, replies) == {"ok": "time limits set successfully"}


@pytest.mark.timeout(120)
def test_revoke_flags_the_task_on_the_worker(cluster):
    task_id = str(uuid.uuid4())
    replies = cluster.app.control.revoke(task_id, reply=True, destination=[cluster.hostname],
                                         timeout=10)
    assert mine(cluster, replies) == {"ok": f"tasks {{'{task_id}'}} flagged as revoked"}
    revoked = cluster.app.control.inspect(destination=[cluster.hostname], timeout=10).revoked()
    assert task_id in revoked[cluster.hostname]


@pytest.mark.timeout(120)
def test_terminate_kills_the_running_task(cluster):
    result = cluster.app.send_task("tasks.sleep", args=[60])
    inspect = cluster.app.control.inspect(destination=[cluster.hostname], timeout=5)
    eventually(lambda: is_active(inspect, cluster, result.id), f"{result.id} active")
    replies = cluster.app.control.terminate(result.id, signal="SIGKILL", reply=True,
                                            destination=[cluster.hostname], timeout=10)
    assert mine(cluster, replies) == {"ok": f"terminate: {result.id}"}
    eventually(lambda: not is_active(inspect, cluster, result.id), "the task gone")


@pytest.mark.timeout(120)
def test_add_and_cancel_consumer_change_what_the_worker_consumes(cluster):
    extra = f"{cluster.queue}-extra"
    control = cluster.app.control
    inspect = control.inspect(destination=[cluster.hostname], timeout=10)

    def consumed() -> list[str]:
        return [q["name"] for q in inspect.active_queues()[cluster.hostname]]

    assert mine(cluster, control.add_consumer(extra, reply=True, destination=[cluster.hostname],
                                              timeout=10)) == {"ok": f"add consumer {extra}"}
    eventually(lambda: extra in consumed(), f"{extra} consumed")
    assert mine(cluster, control.cancel_consumer(extra, reply=True, timeout=10,
                                                 destination=[cluster.hostname])) == {
        "ok": f"no longer consuming from {extra}"}
    eventually(lambda: extra not in consumed(), f"{extra} no longer consumed")


@pytest.mark.timeout(120)
def test_pool_grow_and_shrink(cluster):
    """Celery answers at once; it refuses to shrink while every process is busy (a new one
    may still be starting), so shrinking is asked again until it is accepted."""
    control, where = cluster.app.control, {"destination": [cluster.hostname], "timeout": 10}
    assert mine(cluster, control.pool_grow(1, reply=True, **where)) == {"ok": "pool will grow"}
    for _ in range(50):
        reply = mine(cluster, control.pool_shrink(1, reply=True, **where))
        if reply == {"ok": "pool will shrink"}:
            break
        assert "All processes busy" in reply["error"]
        time.sleep(0.2)
    else:
        pytest.fail(f"the pool never shrank: {reply}")


@pytest.mark.timeout(120)
def test_events_on_off_heartbeat_and_autoscale_replies(cluster):
    control, where = cluster.app.control, {"destination": [cluster.hostname], "timeout": 10}
    assert "ok" in mine(cluster, control.enable_events(reply=True, **where))
    assert "ok" in mine(cluster, control.disable_events(reply=True, **where))
    assert "ok" in mine(cluster, control.enable_events(reply=True, **where))
    assert mine(cluster, control.heartbeat(reply=True, **where)) is None
    assert mine(cluster, control.autoscale(2, 1, reply=True, **where)) == {
        "error": "ValueError('Autoscale not enabled')"}


@pytest.mark.timeout(120)
def test_without_reply_broadcast_returns_none(cluster):
    assert cluster.app.control.heartbeat(destination=[cluster.hostname]) is None


@pytest.mark.timeout(120)
def test_purge_discards_the_apps_waiting_tasks(cluster, unique):
    app = App("client", broker=cluster.broker, task_default_queue=f"purge-{unique}")
    try:
        for n in range(3):
            app.send_task("tasks.add", args=[n, n])
        assert app.control.purge() == 3
        assert app.control.purge() == 0
    finally:
        app.close()
        delete_queues(cluster.broker, f"purge-{unique}")


@pytest.mark.timeout(180)
def test_a_busy_worker_is_no_reply_and_does_not_hold_up_the_others(cluster, tmp_path, unique):
    """A solo-pool Celery worker running a long task cannot answer: it costs the timeout only."""
    queue = f"busy-{unique}"
    busy = f"celery-{queue}@{HOST}"
    try:
        with start_celery(tmp_path, cluster.broker, queue, pool="solo") as proc:
            app = App("client", broker=cluster.broker, task_default_queue=queue)
            app.send_task("tasks.sleep", args=[60])
            eventually(lambda: app.control.ping(destination=[busy], timeout=1).no_reply,
                       "the worker stuck in its task")
            replies = app.control.ping(destination=[cluster.hostname, busy], timeout=2)
            assert replies == [{cluster.hostname: {"ok": "pong"}}]
            assert replies.no_reply == (busy,)
            app.close()
            os.killpg(proc.pid, signal.SIGKILL)  # its warm shutdown would wait for the sleep
    finally:
        delete_queues(cluster.broker, queue)


@pytest.mark.timeout(180)
def test_shutdown_stops_the_worker(tmp_path, unique):
    broker = need_broker("redis")
    queue = f"down-{unique}"
    app = App("client", broker=broker, task_default_queue=queue)
    try:
        with start_celery(tmp_path, broker, queue, pool="solo") as proc:
            app.control.shutdown(destination=[f"celery-{queue}@{HOST}"])
            assert proc.wait(60) == 0
    finally:
        app.close()
        delete_queues(broker, queue)


@pytest.mark.timeout(60)
def test_an_unreachable_broker_is_a_clear_error():
    app = App("client", broker="redis://:secret@127.0.0.1:1/0", broker_connection_timeout=0.5)
    with pytest.raises(BrokerUnavailable, match=r"redis://:\*\*@127.0.0.1:1/0 is unreachable"):
        app.control.ping(timeout=1)
