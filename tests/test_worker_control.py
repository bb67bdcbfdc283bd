"""Remote control of a qtui worker: every inspect command answers in Celery's shapes; control
commands change the worker at run time (revoke with terminate, rate and time limits, pool size,
consumed queues, shutdown); ``task_arguments`` gives back a task's full arguments; and no
request -- unknown commands, arguments of the wrong types, malformed or huge messages -- stops
a worker. Most tests share one prefork worker on Redis and undo what they change."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Consumer, Producer

from qtui.core import App, states
from qtui.core.exceptions import TaskRevokedError, TimeLimitExceeded
from qtui.workers.control import HANDLERS

from .worker_helpers import (  # noqa: F401 - fixtures
    REDIS_URL,
    ModuleWorkers,
    Setup,
    broker_urls,
    hostname_of,
    make_setup,
    module_workers,
)

T = TypeVar("T")
SECRET = "hunter2"
#: Keys of Celery's Request.info(), what active/reserved/scheduled/query_task show per task.
REQUEST_INFO_KEYS = {"id", "name", "args", "kwargs", "type", "hostname", "time_start",
                     "acknowledged", "delivery_info", "worker_pid"}
#: Keys of a Celery worker's stats reply.
STATS_KEYS = {"total", "pid", "clock", "uptime", "pool", "broker", "prefetch_count", "rusage"}
#: Seconds a task runs when the test shows it was stopped: long enough to reach it while it
#: runs, short enough that the test can wait past its end to see it never finished.
SHORT = 5


class Node:
    """One shared worker, its client app and its name."""

    def __init__(self, setup: Setup, process: Any) -> None:
        self.setup = setup
        self.process = process
        self.hostname = hostname_of(setup)
        self.app = setup.app()

    def inspect(self, timeout: float = 10.0) -> Any:
        return self.app.control.inspect(destination=[self.hostname], timeout=timeout)

    def ask(self, method: str, timeout: float = 10.0, **arguments: Any) -> Any:
        """This worker's reply to one command."""
        replies = self.app.control.broadcast(method, arguments=arguments, reply=True,
                                             destination=[self.hostname], timeout=timeout)
        assert replies, f"{self.hostname} did not answer {method}"
        return replies.by_worker()[self.hostname]

    def stats(self) -> dict[str, Any]:
        return self.inspect().stats()[self.hostname]

    def active_ids(self) -> list[str]:
        return [t["id"] for t in self.inspect().active()[self.hostname]]


@pytest.fixture(scope="module")
def node(module_workers: ModuleWorkers):
    setup, process = module_workers.get(
        "redis", "-P", "prefork", "-c", "2",
        broker_management_url=f"http://guest:{SECRET}@127.0.0.1:15672/")
    shared = Node(setup, process)
    yield shared
    shared.app.close()


def eventually(check: Callable[[], T], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


# inspect ----------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_inspect_replies_have_celerys_shapes(node: Node):
    inspect, host = node.inspect(), node.hostname
    assert inspect.ping() == {host: {"ok": "pong"}}
    stats = inspect.stats()[host]
    assert set(stats) == STATS_KEYS
    assert stats["pool"]["max-concurrency"] == 2 and len(stats["pool"]["processes"]) == 2
    assert stats["pool"]["implementation"] == "qtui.workers.pools.prefork:PreforkPool"
    assert stats["prefetch_count"] == 8 and stats["broker"]["transport"] == "redis"
    assert isinstance(stats["uptime"], int) and isinstance(stats["total"], dict)
    assert "utime" in stats["rusage"] and "password" not in stats["broker"]
    for method in ("active", "reserved", "scheduled", "revoked"):
        assert isinstance(getattr(inspect, method)()[host], list), method
    registered = inspect.registered()[host]
    assert "tasks.add" in registered and "tasks.tick [rate_limit=5/s]" in registered
    assert inspect.query_task("no-such-id") == {host: {}}
    assert inspect.conf()[host]["task_default_queue"] == node.setup.queue
    assert "qtui" in inspect.report()[host]["ok"]
    queues = inspect.active_queues()[host]
    assert [q["name"] for q in queues] == [node.setup.queue]
    assert queues[0]["exchange"]["type"] == "direct"
    assert isinstance(inspect.clock()[host]["clock"], int)


@pytest.mark.timeout(60)
def test_conf_and_stats_censor_secrets(node: Node):
    conf = node.inspect().conf(with_defaults=True)[node.hostname]
    assert conf["broker_management_url"] == "http://guest:**@127.0.0.1:15672/"
    assert conf["worker_enable_remote_control"] is True
    assert SECRET not in str(conf) and SECRET not in str(node.stats())
    assert SECRET not in node.inspect().report()[node.hostname]["ok"]


@pytest.mark.timeout(60)
def test_active_and_query_task_show_a_running_task_with_its_arguments(node: Node):
    result = node.app.send_task("tasks.slow", args=[30, "active"])
    try:
        info = eventually(lambda: next((t for t in node.inspect().active()[node.hostname]
                                        if t["id"] == result.id), None), "the task active")
        assert set(info) == REQUEST_INFO_KEYS
        assert (info["name"], info["args"], info["hostname"]) == ("tasks.slow", [30, "active"],
                                                                  node.hostname)
        assert info["worker_pid"] in node.stats()["pool"]["processes"]
        assert info["delivery_info"]["routing_key"] == node.setup.queue
        state, queried = node.inspect().query_task(result.id)[node.hostname][result.id]
        assert state == "active" and queried["id"] == result.id
    finally:
        node.app.control.terminate(result.id, destination=[node.hostname])
    assert isinstance(result.get(timeout=30, propagate=False), TaskRevokedError)


@pytest.mark.timeout(60)
def test_scheduled_lists_a_task_waiting_for_its_eta(node: Node):
    result = node.app.send_task("tasks.mark", args=["later"], countdown=3)
    entry = eventually(lambda: next((e for e in node.inspect().scheduled()[node.hostname]
                                     if e["request"]["id"] == result.id), None), "scheduled")
    assert set(entry) == {"eta", "priority", "request"} and entry["eta"]
    state, _ = node.inspect().query_task(result.id)[node.hostname][result.id]
    assert state == "scheduled"
    assert node.ask("revoke", task_id=result.id) == {
        "ok": f"tasks {{'{result.id}'}} flagged as revoked"}
    assert result.id in node.inspect().revoked()[node.hostname]
    assert isinstance(result.get(timeout=30, propagate=False), TaskRevokedError)


@pytest.mark.timeout(60)
def test_safe_mode_gives_the_senders_reprs_of_active_and_scheduled_tasks(node: Node):
    running = node.app.send_task("tasks.slow", args=[30, "hunter2"], argsrepr="(30, '***')")
    later = node.app.send_task("tasks.mark", args=["s3cr3t"], countdown=5, argsrepr="('***',)")
    try:
        active = eventually(lambda: next((t for t in node.inspect().active(safe=True)[
            node.hostname] if t["id"] == running.id), None), "the task active")
        entry = eventually(lambda: next((e for e in node.inspect().scheduled(safe=True)[
            node.hostname] if e["request"]["id"] == later.id), None), "scheduled")
    finally:
        node.app.control.terminate([running.id, later.id], destination=[node.hostname])
    assert active["args"] == "(30, '***')" and entry["request"]["args"] == "('***',)"


@pytest.mark.timeout(90)
def test_inspect_asks_in_safe_mode_when_told(module_workers: ModuleWorkers):
    """``app.control.inspect()``'s task lists give the reprs the sender wrote with
    ``safe=True``, as ``qtui inspect`` asks, and the arguments by default, as Celery's client
    (query_task could not ask for safe mode). One pool process, so a second task waits
    reserved; a horizon that keeps the countdown task."""
    setup, _ = module_workers.get("redis", "-P", "prefork", "-c", "1",
                                  worker_eta_horizon=3600)
    node = Node(setup, None)
    sent = [node.app.send_task("tasks.slow", args=[30, "hunter2"], argsrepr="(30, '***')"),
            node.app.send_task("tasks.add", args=[2, 3], argsrepr="(***)"),
            node.app.send_task("tasks.mark", args=["s3cr3t"], countdown=600,
                               argsrepr="('***',)")]
    running, waiting, later = (r.id for r in sent)
    inspect, host = node.inspect(), node.hostname
    try:
        eventually(lambda: any(t["id"] == running for t in inspect.active(safe=True)[host])
                   and any(t["id"] == waiting for t in inspect.reserved(safe=True)[host])
                   and any(e["request"]["id"] == later for e in inspect.scheduled(safe=True)[host]),
                   "the tasks held")

        def args(tasks: list[dict[str, Any]], task_id: str) -> Any:
            return next(t["args"] for t in tasks if t["id"] == task_id)

        assert args(inspect.active(safe=True)[host], running) == "(30, '***')"
        assert args(inspect.active()[host], running) == [30, "hunter2"]
        assert args(inspect.reserved(safe=True)[host], waiting) == "(***)"
        assert args(inspect.reserved()[host], waiting) == [2, 3]
        assert args([e["request"] for e in inspect.scheduled(safe=True)[host]], later) == "('***',)"
        assert args([e["request"] for e in inspect.scheduled()[host]], later) == \
            ["s3cr3t"]
        for queried in (inspect.query_task(running, later, safe=True),
                        inspect.query_task([running, later], safe=True)):
            assert {i: info["args"] for i, (_, info) in queried[host].items()} == {
                running: "(30, '***')", later: "('***',)"}
        _, info = inspect.query_task(later)[host][later]
        assert info["args"] == ["s3cr3t"]
    finally:
        node.app.control.terminate([running, waiting, later], destination=[host])
        node.app.close()


# control ----------------------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_revoke_with_terminate_kills_only_the_target_task(node: Node):
    tag, sent = f"target-{uuid.uuid4().hex[:8]}", time.time()
    target = node.app.send_task("tasks.slow", args=[SHORT, tag])
    other = node.app.send_task("tasks.slow", args=[30, "other"])
    try:
        eventually(lambda: {target.id, other.id} <= set(node.active_ids()), "both running")
        before = {t["id"]: t["worker_pid"] for t in node.inspect().active()[node.hostname]}
        assert node.ask("revoke", task_id=[target.id], terminate=True, signal="SIGTERM") == {
            "ok": f"terminate: {target.id}"}
        assert isinstance(target.get(timeout=30, propagate=False), TaskRevokedError)
        assert target.state == states.REVOKED
        after = {t["id"]: t["worker_pid"] for t in node.inspect().active()[node.hostname]}
        assert after == {other.id: before[other.id]}
    finally:
        node.app.control.terminate(other.id, destination=[node.hostname])
    other.get(timeout=30, propagate=False)
    started = next((r["t"] for r in node.setup.records("started") if r["tag"] == tag), sent)
    time.sleep(max(0.0, started + SHORT + 2 - time.time()))  # past when it would have ended
    assert [r for r in node.setup.records("done") if r["tag"] == tag] == []


@pytest.mark.timeout(60)
def test_terminate_of_an_unknown_task_says_so(node: Node):
    assert node.ask("terminate", task_id=[str(uuid.uuid4())], signal="KILL") == {
        "ok": "terminate: tasks unknown"}


@pytest.mark.timeout(90)
def test_rate_limit_changes_behaviour_at_run_time(node: Node):
    """At one task an hour the second and third wait (shown as reserved); lifting the limit
    lets them run."""
    assert node.ask("rate_limit", task_name="tasks.mark", rate_limit="1/h") == {
        "ok": "new rate limit set successfully"}
    try:
        assert "tasks.mark [rate_limit=1/h]" in \
            node.inspect().registered("rate_limit")[node.hostname]
        tags = [f"rate-{n}-{uuid.uuid4().hex[:8]}" for n in range(3)]
        results = [node.app.send_task("tasks.mark", args=[tag]) for tag in tags]
        assert results[0].get(timeout=30) == tags[0]
        waiting = eventually(lambda: [t["id"] for t in node.inspect().reserved()[node.hostname]
                                      if t["name"] == "tasks.mark"], "two tasks waiting")
        assert sorted(waiting) == sorted(r.id for r in results[1:])
        assert [r["tag"] for r in node.setup.records("mark") if r["tag"] in tags] == tags[:1]
    finally:
        assert node.ask("rate_limit", task_name="tasks.mark", rate_limit=0) == {
            "ok": "rate limit disabled successfully"}
    assert [r.get(timeout=30) for r in results[1:]] == tags[1:]


@pytest.mark.timeout(60)
def test_rate_limit_refuses_unknown_tasks_and_bad_rates(node: Node):
    assert node.ask("rate_limit", task_name="tasks.nope", rate_limit="1/s") == {
        "error": "unknown task"}
    reply = node.ask("rate_limit", task_name="tasks.add", rate_limit="fast")
    assert reply["error"].startswith("Invalid rate limit string")


@pytest.mark.timeout(90)
def test_time_limit_changes_behaviour_at_run_time(node: Node):
    assert node.ask("time_limit", task_name="tasks.soft_limited", soft=1) == {
        "ok": "time limits set successfully"}
    assert node.ask("time_limit", task_name="tasks.spin", hard=1) == {
        "ok": "time limits set successfully"}
    try:
        caught = node.app.send_task("tasks.soft_limited", args=[30])
        killed = node.app.send_task("tasks.spin", args=[30])
        assert caught.get(timeout=30) == "soft limit caught"
        assert isinstance(killed.get(timeout=30, propagate=False), TimeLimitExceeded)
        assert "tasks.spin [time_limit=1.0]" in \
            node.inspect().registered("time_limit")[node.hostname]
    finally:
        node.ask("time_limit", task_name="tasks.soft_limited")
        node.ask("time_limit", task_name="tasks.spin")
    assert node.ask("time_limit", task_name="tasks.nope", soft=1) == {"error": "unknown task"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_pool_grow_and_shrink_change_the_pool(pool: str, node: Node, module_workers):
    """Prefork on Redis, threads on the embedded broker: the pool, as stats shows it, and the
    prefetch window (4 per slot) follow."""
    target = node if pool == "prefork" else Node(*module_workers.get(
        "sqlite", "-P", "threads", "-c", "2"))
    key = "processes" if pool == "prefork" else "threads"

    def size() -> tuple[int, int, int]:
        stats = target.stats()
        found = stats["pool"][key]
        return (stats["pool"]["max-concurrency"],
                len(found) if isinstance(found, list) else found, stats["prefetch_count"])

    assert size() == (2, 2, 8)
    assert target.ask("pool_grow", n=2) == {"ok": "pool will grow"}
    eventually(lambda: size() == (4, 4, 16), "the pool grown to 4")
    assert target.ask("pool_shrink", n=2) == {"ok": "pool will shrink"}
    eventually(lambda: size() == (2, 2, 8), "the pool back to 2")
    assert target.app.send_task("tasks.add", args=[1, 2]).get(timeout=30) == 3


@pytest.mark.timeout(60)
def test_autoscale_is_refused_as_by_a_celery_worker_without_it(node: Node):
    assert node.ask("autoscale", max=4, min=1)["error"].startswith("Autoscale not enabled")


@pytest.mark.timeout(90)
def test_add_and_cancel_consumer_change_what_is_consumed(node: Node):
    extra = f"{node.setup.queue}-extra"

    def consumed() -> list[str]:
        return [q["name"] for q in node.inspect().active_queues()[node.hostname]]

    assert node.ask("add_consumer", queue=extra) == {"ok": f"add consumer {extra}"}
    eventually(lambda: extra in consumed(), f"{extra} consumed")
    assert node.app.send_task("tasks.add", args=[2, 2], queue=extra).get(timeout=30) == 4
    assert node.ask("cancel_consumer", queue=extra) == {
        "ok": f"no longer consuming from {extra}"}
    eventually(lambda: extra not in consumed(), f"{extra} no longer consumed")
    node.app.send_task("tasks.mark", args=["left"], queue=extra)
    assert node.app.send_task("tasks.add", args=[3, 3]).get(timeout=30) == 6
    assert redis.Redis.from_url(REDIS_URL).llen(extra) == 1
    assert "left" not in [r["tag"] for r in node.setup.records("mark")]


@pytest.mark.timeout(60)
def test_task_arguments_gives_back_the_full_arguments(node: Node):
    numbers = list(range(5000))
    big = node.app.send_task("tasks.add", args=[numbers, [1]])
    named = node.app.send_task("tasks.mark", kwargs={"tag": "x" * 5000})
    huge = node.app.send_task("tasks.add", args=["y" * 300_000, "z"])
    for result in (big, named, huge):
        result.get(timeout=30)
    reply = node.ask("task_arguments", ids=[big.id, named.id, huge.id, "unknown-id"])
    fields = ("args", "kwargs", "name", "queue", "masked")
    assert {task_id: {k: found[k] for k in fields if k in found}
            for task_id, found in reply.items()} == {
        big.id: {"args": [numbers, [1]], "kwargs": {}, "name": "tasks.add",
                 "queue": node.setup.queue, "masked": False},
        named.id: {"args": [], "kwargs": {"tag": "x" * 5000}, "name": "tasks.mark",
                   "queue": node.setup.queue, "masked": False},
        huge.id: {"name": "tasks.add", "queue": node.setup.queue, "masked": False}}


@pytest.mark.timeout(90)
def test_shutdown_stops_the_worker_after_its_running_task(tmp_path, unique):
    url, backend = broker_urls("sqlite", tmp_path)
    setup = make_setup(tmp_path, f"qw-{unique}", url, backend)
    app = setup.app()
    try:
        with setup.worker("-P", "threads", "-c", "1") as proc:
            hostname = hostname_of(setup)
            running = app.send_task("tasks.slow", args=[2, "last"])
            setup.wait_records("started", 1)
            replies = app.control.shutdown(destination=[hostname], reply=True, timeout=10)
            assert replies == [{hostname: {"ok": "shutting down"}}]
            assert proc.wait(60) == 0
            assert running.get(timeout=10) == "last"
            assert f"worker {hostname} stopped" in proc.log_path.read_text()
    finally:
        app.close()
        setup.cleanup()


@pytest.mark.timeout(60)
def test_remote_control_can_be_turned_off(module_workers):
    setup, _ = module_workers.get("redis", "-P", "solo", worker_enable_remote_control=False)
    hostname = hostname_of(setup)
    app = setup.app()
    try:
        replies = app.control.ping(destination=[hostname], timeout=2)
        assert replies == [] and replies.no_reply == (hostname,)
        assert app.send_task("tasks.add", args=[1, 1]).get(timeout=30) == 2
    finally:
        app.close()


# requests that must not hurt ----------------------------------------------------------------
class RawMailbox:
    """Publishes any body as a ``celery.pidbox`` request and reads replies by ticket."""

    def __init__(self, app: App) -> None:
        self.connection = app.connection_for_write()
        self.mailbox = app.control.mailbox(self.connection)
        channel = self.connection.default_channel
        self.replies: dict[str, Any] = {}
        self.consumer = Consumer(channel, [self.mailbox.reply_queue], no_ack=True,
                                 accept=["json"], callbacks=[self._on_reply])
        self.consumer.consume()
        self.producer = Producer(channel, auto_declare=False)

    def _on_reply(self, body: Any, message: Any) -> None:
        self.replies[message.headers.get("ticket")] = body

    def send(self, body: Any, reply: bool = True) -> str:
        ticket = uuid.uuid4().hex
        if reply and isinstance(body, dict):
            body = {**body, "ticket": ticket, "reply_to": {
                "exchange": self.mailbox.reply_exchange.name, "routing_key": self.mailbox.oid}}
        self.producer.publish(body, exchange=self.mailbox.exchange, routing_key="",
                              declare=[self.mailbox.exchange], serializer="json",
                              headers={"clock": 1, "ticket": ticket})
        return ticket

    def reply(self, ticket: str, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while ticket not in self.replies and time.monotonic() < deadline:
            try:
                self.connection.drain_events(timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                pass
        return self.replies.pop(ticket, None)

    def ask(self, hostname: str, method: Any, arguments: Any = None, **extra: Any) -> Any:
        ticket = self.send({"method": method, "arguments": arguments,
                            "destination": [hostname], **extra})
        return self.reply(ticket)

    def close(self) -> None:
        self.consumer.cancel()
        self.connection.release()


@pytest.fixture(scope="module")
def target(module_workers):
    """A solo worker on RabbitMQ (where a bad request could close a channel), and a client
    speaking raw pidbox to it."""
    setup, process = module_workers.get("rabbitmq", "-P", "solo")
    app = setup.app()
    raw = RawMailbox(app)
    yield hostname_of(setup), raw, process, app
    raw.close()
    app.close()


BAD_REQUESTS = [
    ("no_such_command", {}, "unknown command 'no_such_command'"),
    (None, {}, "unknown command None"),
    (42, {}, "unknown command 42"),
    ("ping", [1, 2], "arguments must be a mapping"),
    ("ping", "text", "arguments must be a mapping"),
    ("revoke", {"task_id": 5}, "task_id must be a task id or a list of task ids"),
    ("revoke", {"task_id": ["a", 1]}, "task_id must be"),
    ("revoke", {"task_id": "a", "terminate": "perhaps"}, "terminate must be true or false"),
    ("terminate", {"task_id": "a", "signal": "SIGNOPE"}, "unknown signal 'SIGNOPE'"),
    ("terminate", {"task_id": "a", "signal": 99999}, "unknown signal 99999"),
    ("rate_limit", {"task_name": ["tasks.add"], "rate_limit": "1/s"}, "unknown task"),
    ("rate_limit", {"task_name": "tasks.add", "rate_limit": {"a": 1}}, "Invalid rate limit"),
    ("time_limit", {"task_name": "tasks.add", "hard": "soon"}, "hard must be a number"),
    ("time_limit", {"task_name": "tasks.add", "soft": -1}, "soft must be a number"),
    ("pool_grow", {"n": -3}, "n must be a whole number"),
    ("pool_grow", {"n": 2}, "the solo pool runs one task at a time"),
    ("pool_shrink", {"n": "many"}, "n must be a whole number"),
    ("registered", {"taskinfoitems": 5}, "taskinfoitems must be a list"),
    ("query_task", {"ids": {"a": 1}}, "ids must be a task id or a list"),
    ("conf", {"with_defaults": "maybe"}, "with_defaults must be true or false"),
    ("active", {"safe": [1]}, "safe must be true or false"),
    ("add_consumer", {"queue": ""}, "queue must be a non-empty string"),
    ("add_consumer", {"queue": "q", "exchange": 5}, "exchange must be a non-empty string"),
    ("cancel_consumer", {"queue": None}, "queue must be a non-empty string"),
    ("task_arguments", {"ids": 7}, "ids must be a task id or a list"),
    ("hello", {"from_node": "x", "revoked": [1]}, "revoked must be a task id or a list"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method, arguments, error", BAD_REQUESTS)
def test_bad_requests_get_an_error_reply(target, method, arguments, error):
    hostname, raw, _, _ = target
    reply = raw.ask(hostname, method, arguments)
    assert reply is not None and set(reply) == {hostname}
    assert error in reply[hostname]["error"]


@pytest.mark.timeout(60)
def test_unexpected_arguments_are_ignored_as_celerys_handlers_do(target):
    hostname, raw, _, _ = target
    assert raw.ask(hostname, "ping", {"whatever": [1, 2]}) == {hostname: {"ok": "pong"}}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12)
#: Commands fuzzed: every one but shutdown (it would end the test) and add_consumer (random
#: queues would stay on the broker), plus names nobody knows.
FUZZED_METHODS = st.sampled_from(sorted(set(HANDLERS) - {"shutdown", "add_consumer"})) \
    | st.text(max_size=30) | json_values
ARGUMENT_NAMES = st.sampled_from(["task_id", "ids", "n", "terminate", "signal", "task_name",
                                  "rate_limit", "hard", "soft", "queue", "safe", "revoked",
                                  "taskinfoitems", "with_defaults", "from_node", "max", "min"])
ARGUMENTS = st.dictionaries(ARGUMENT_NAMES | st.text(max_size=12), json_values, max_size=5) \
    | json_values


@pytest.mark.timeout(300)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=FUZZED_METHODS, arguments=ARGUMENTS)
def test_fuzzed_requests_always_get_a_reply(target, method, arguments):
    hostname, raw, process, _ = target
    reply = raw.ask(hostname, method, arguments)
    assert reply is not None and set(reply) == {hostname}, (method, arguments)
    assert process.poll() is None


MALFORMED = [
    [1, 2, 3], "ping", 7, None, {},
    {"method": "ping", "destination": 5},
    {"method": "ping", "destination": {"a": 1}},
    {"method": "ping", "pattern": "*", "matcher": "no-such-matcher"},
    {"method": "ping", "pattern": 5, "matcher": []},
    {"method": "ping", "reply_to": "nowhere"},
    {"method": "ping", "reply_to": {"exchange": "celeryev", "routing_key": "x"}},
    {"method": "ping", "reply_to": {"exchange": 1, "routing_key": None}},
    {"method": "ping", "ticket": {"a": [1]}},
]


@pytest.mark.timeout(60)
def test_malformed_messages_are_dropped_and_the_worker_answers_on(target):
    hostname, raw, process, _ = target
    for body in MALFORMED:
        raw.send(body, reply=False)
    assert raw.ask(hostname, "ping") == {hostname: {"ok": "pong"}}
    assert process.poll() is None


@pytest.mark.timeout(120)
def test_huge_requests_get_a_reply(target):
    hostname, raw, process, _ = target
    assert raw.ask(hostname, "ping", {"padding": "x" * (8 * 1024 * 1024)}) == {
        hostname: {"ok": "pong"}}
    ids = [uuid.uuid4().hex for _ in range(100_000)]
    assert raw.ask(hostname, "task_arguments", {"ids": ids}) == {hostname: {}}
    assert raw.ask(hostname, "query_task", {"ids": ids}) == {hostname: {}}
    assert process.poll() is None


@pytest.mark.timeout(60)
def test_a_fuzzed_worker_still_runs_tasks_and_no_handler_failed(target):
    hostname, raw, process, app = target
    assert app.send_task("tasks.add", args=[20, 22]).get(timeout=30) == 42
    assert raw.ask(hostname, "ping") == {hostname: {"ok": "pong"}}
    assert "Traceback" not in process.log_path.read_text()
