"""On Redis a worker owns each delivery from the moment it leaves its queue, and gives back only
what dead owners held: nothing is lost by a worker killed in its idle wait or by a malformed
message, nothing of a Celery worker's or of a live worker's is delivered twice, and busy queues
do not starve the others."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Consumer, Producer, Queue

from qtui.core.brokers.redis import channel as redis_broker
from qtui.core.brokers.redis import worker_channel
from qtui.core.brokers.redis.worker_channel import ALIVE_KEY, OWNED_KEY, OWNERS_KEY, PROCESSING_KEY
from qtui.workers.deadletter import DEAD_QUEUE_HEADER, DEAD_REASON_HEADER

from .processes import running, write_module
from .redis_server import redis_server, spare_port
from .services import REDIS_HOST, REDIS_PORT
from .worker_helpers import REDIS_URL, TASKS, Setup, make_setup, owned_channel, wait_for

#: A database of these tests' own: another consumer restoring by age with a short visibility
#: timeout (an older qtui, kombu) would give back the deliveries these tests watch.
BROKER = f"redis://{REDIS_HOST}:{REDIS_PORT}/7"
#: Short, so that a worker restoring by age (as kombu does) would do it within the test.
VISIBILITY_TIMEOUT = 2

GIL_TASK = """

import ctypes

@app.task
def hold_gil(seconds):
    record("started")
    ctypes.PyDLL(None).sleep(int(seconds))  # a C call that keeps the GIL the whole time
    record("done")
"""


@pytest.fixture
def setup(tmp_path, unique, redis_url) -> Iterator[Setup]:
    setup = make_setup(tmp_path, f"qw-{unique}", BROKER, BROKER,
                       broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT})
    write_module(tmp_path, "tasks", TASKS + GIL_TASK)
    yield setup
    setup.cleanup()


def pending(setup: Setup) -> int:
    """Messages waiting in the test's queue."""
    return redis.Redis.from_url(BROKER).llen(setup.queue)


@pytest.mark.timeout(90)
def test_a_worker_killed_in_its_idle_wait_loses_nothing(setup: Setup):
    app = setup.app()
    taken: str | None = None
    with setup.worker("-P", "solo", name="a") as first:
        app.send_task("tasks.mark", args=["warm-up"])  # the client's connection is open
        assert setup.wait_records("mark", 1)
        for attempt in range(20):
            time.sleep(0.1)  # idle again, most likely inside its blocking wait
            os.kill(first.pid, signal.SIGSTOP)
            app.send_task("tasks.mark", args=[f"t{attempt}"])
            # Taken from the queue while the worker is stopped: by its pending blocking wait.
            if wait_for(lambda: pending(setup) == 0, 1.0):
                taken = f"t{attempt}"
                break
            os.kill(first.pid, signal.SIGCONT)
            assert wait_for(lambda: pending(setup) == 0, 10)
        assert taken is not None, "the worker was never stopped inside its blocking wait"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    with setup.worker("-P", "solo", name="b"):
        ran = wait_for(lambda: taken in {r["tag"] for r in setup.records("mark")}, 20)
    assert ran, f"{taken} never ran: {setup.records('mark')}"


@pytest.mark.timeout(60)
def test_malformed_messages_reach_the_dead_letter_queue_with_their_reason(setup: Setup):
    client = redis.Redis.from_url(BROKER)
    app = setup.app()
    client.lpush(setup.queue, b"plain text, not JSON")  # taken by a busy fetch
    with setup.worker("-P", "solo"):
        app.send_task("tasks.mark", args=["first"])
        assert setup.wait_records("mark", 1)
        client.lpush(setup.queue, b'{"properties": {"delivery_tag": "x"}}')  # by the idle wait
        app.send_task("tasks.mark", args=["second"])
        assert len(setup.wait_records("mark", 2)) == 2
        dead = setup.dead_letters(expected=2)
    assert sorted(m.body for m in dead) == [b"plain text, not JSON",
                                             b'{"properties": {"delivery_tag": "x"}}']
    reasons = {m.body: m.headers[DEAD_REASON_HEADER] for m in dead}
    assert "not a JSON object" in reasons[b"plain text, not JSON"]
    assert "'body'" in reasons[b'{"properties": {"delivery_tag": "x"}}']
    assert {m.headers[DEAD_QUEUE_HEADER] for m in dead} == {setup.queue}


def _bad_message(setup: Setup, change: Callable[[dict[str, Any]], bytes]) -> tuple[bytes, str]:
    """A task message of the test's queue, as ``change`` spoils it, and its delivery tag."""
    client = redis.Redis.from_url(BROKER)
    setup.app().send_task("tasks.mark", args=["bad"])
    envelope = json.loads(client.rpop(setup.queue))
    return change(envelope), envelope["properties"]["delivery_tag"]


@contextmanager
def _between_two_tasks(setup: Setup, bad: bytes, when: str,
                       pool: str = "solo") -> Iterator[None]:
    """A worker (``pool``) given ``bad`` between the tasks "first" and "second": ``queued``
    before it starts (a fetch takes it), or ``sent-idle`` while it waits idle (its blocking
    wait takes it)."""
    client = redis.Redis.from_url(BROKER)
    app = setup.app()
    if when == "queued":
        app.send_task("tasks.mark", args=["first"])
        client.lpush(setup.queue, bad)
        app.send_task("tasks.mark", args=["second"])
        with setup.worker("-P", pool):
            yield
        return
    with setup.worker("-P", pool):
        app.send_task("tasks.mark", args=["first"])
        assert setup.wait_records("mark", 1)
        time.sleep(0.5)  # idle again, inside its blocking wait
        client.lpush(setup.queue, bad)
        app.send_task("tasks.mark", args=["second"])
        yield


@pytest.mark.timeout(60)
@pytest.mark.parametrize("when", ["queued", "sent-idle"])
def test_a_message_whose_delivery_info_cannot_be_encoded_again_is_dead_lettered(setup: Setup,
                                                                                when: str):
    """Its exchange, 1e999, decodes to infinity, which Lua's JSON cannot encode back into the
    unacked record: the fetch script dead-letters it rather than failing half-way, and an idle
    worker's wait leaves it to the fetch script rather than running it."""
    def infinite_exchange(envelope: dict[str, Any]) -> bytes:
        envelope["properties"]["delivery_info"]["exchange"] = "EXCHANGE"
        return json.dumps(envelope).replace('"EXCHANGE"', "1e999").encode()

    client = redis.Redis.from_url(BROKER)
    bad, tag = _bad_message(setup, infinite_exchange)
    with _between_two_tasks(setup, bad, when):
        assert wait_for(lambda: len(setup.records("mark")) >= 2, 30)
        dead = setup.dead_letters(expected=1)
        assert sorted(r["tag"] for r in setup.records("mark")) == ["first", "second"]
    assert [m.body for m in dead] == [bad]
    assert "cannot be encoded" in dead[0].headers[DEAD_REASON_HEADER]
    assert not client.hexists("unacked", tag)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("when", ["queued", "sent-idle"])
def test_a_message_whose_body_is_not_base64_is_dead_lettered_and_its_records_dropped(
        setup: Setup, when: str):
    """kombu cannot decode its body ("ab=c" has base64's letters and length, not its padding):
    the worker checks the body of what the fetch script took, or of what its idle wait moved,
    and moves it to the dead-letter queue, unacked and owned no more, between two good tasks
    (an idle worker that delivered it died in kombu's decode, and so did the next)."""
    def spoiled_body(envelope: dict[str, Any]) -> bytes:
        envelope["body"] = "ab=c"
        return json.dumps(envelope).encode()

    client = redis.Redis.from_url(BROKER)
    bad, tag = _bad_message(setup, spoiled_body)
    with _between_two_tasks(setup, bad, when):
        assert sorted(r["tag"] for r in setup.wait_records("mark", 2)) == ["first", "second"]
        dead = setup.dead_letters(expected=1)
        assert not any(client.sismember(key, tag)
                       for key in client.scan_iter(OWNED_KEY.format(owner="*")))
    assert [m.body for m in dead] == [bad]
    assert dead[0].headers[DEAD_REASON_HEADER] == "not a kombu message: 'body' is not base64"
    assert dead[0].headers[DEAD_QUEUE_HEADER] == setup.queue
    assert not client.hexists("unacked", tag)
    assert client.zscore("unacked_index", tag) is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("member", "value", "reason"), [
    ("body", 12, "no 'body' string"), ("headers", ["a list"], "'headers' is not an object")])
def test_a_message_in_kombus_layout_with_a_bad_body_or_headers_is_dead_lettered(
        setup: Setup, member: str, value: Any, reason: str):
    """The fetch script reads a message in kombu's layout at its end without decoding it; the
    worker, which decodes it, finds a body or headers no kombu message has and dead-letters it
    with the reason the script gives such a message, its records dropped, between two tasks."""
    def spoiled(envelope: dict[str, Any]) -> bytes:
        envelope[member] = value
        return json.dumps(envelope).encode()

    client = redis.Redis.from_url(BROKER)
    bad, tag = _bad_message(setup, spoiled)
    with _between_two_tasks(setup, bad, "queued"):
        assert sorted(r["tag"] for r in setup.wait_records("mark", 2)) == ["first", "second"]
        dead = setup.dead_letters(expected=1)
    assert [m.body for m in dead] == [bad]
    assert dead[0].headers[DEAD_REASON_HEADER] == f"not a kombu message: {reason}"
    assert not client.hexists("unacked", tag)


@pytest.mark.timeout(60)
def test_a_message_whose_end_only_looks_like_kombus_properties_runs_by_its_own(setup: Setup):
    """The fetch script reads a message's delivery tag and routing at its end, where kombu's
    layout puts its properties, without decoding it. A message whose properties come first and
    whose last member ends as kombu's properties do (a delivery tag and routing of its own) is
    delivered by its real properties: run once, settled, no record left under the tag its end
    names."""
    def false_end(envelope: dict[str, Any]) -> bytes:
        reordered = {"properties": envelope["properties"], **envelope, "zz": {
            "delivery_info": {"exchange": "", "routing_key": "elsewhere"}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": "false-end"}}
        return json.dumps(reordered).encode()

    client = redis.Redis.from_url(BROKER)
    bad, _ = _bad_message(setup, false_end)
    with _between_two_tasks(setup, bad, "queued"):
        assert sorted(r["tag"] for r in setup.wait_records("mark", 3)) == \
            ["bad", "first", "second"]
        assert wait_for(lambda: client.hlen("unacked") == 0, 10)
    assert client.zscore("unacked_index", "false-end") is None
    assert not client.llen("elsewhere")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("when", ["queued", "sent-idle"])
def test_a_message_with_a_typed_value_kombu_cannot_build_is_dead_lettered(setup: Setup,
                                                                          when: str):
    """A header ``{"__type__": [], "__value__": null}`` is JSON to the fetch script and an
    unhashable type to kombu's decoder: the worker dead-letters the message with the reason
    and runs the next task, rather than dying with it in its processing list (so that the
    worker restoring it died too: a crash loop)."""
    def crafted_header(envelope: dict[str, Any]) -> bytes:
        envelope["headers"]["x"] = {"__type__": [], "__value__": None}
        return json.dumps(envelope).encode()

    client = redis.Redis.from_url(BROKER)
    bad, tag = _bad_message(setup, crafted_header)
    with _between_two_tasks(setup, bad, when):
        assert sorted(r["tag"] for r in setup.wait_records("mark", 2)) == ["first", "second"]
        dead = setup.dead_letters(expected=1)
    assert [m.body for m in dead] == [bad]
    assert "typed JSON value {'__type__': []" in dead[0].headers[DEAD_REASON_HEADER]
    assert not client.hexists("unacked", tag)
    assert client.zscore("unacked_index", tag) is None


#: What Lua's JSON (cjson, nesting up to 1,000) reads and Python's refuses: an integer of more
#: digits than Python converts (4,300), arrays nested deeper than its recursion limit.
UNDECODABLE = {"digits": ("1" * 5000, "Exceeds the limit (4300 digits)"),
               "deep": ("[" * 990 + "]" * 990, "maximum recursion depth exceeded")}


def _undecodable_header(kind: str) -> Callable[[dict[str, Any]], bytes]:
    def change(envelope: dict[str, Any]) -> bytes:
        envelope["headers"]["x"] = "CRAFTED"
        return json.dumps(envelope).replace('"CRAFTED"', UNDECODABLE[kind][0]).encode()
    return change


#: Delivery tags Python cannot use, as they appear in the JSON of a message: bytes that are not
#: UTF-8 (Lua's JSON passes them through), a lone surrogate escape (Lua's JSON refuses it); and
#: the dead-letter reason a fetch gives, and a restore of a dead owner's ``owned`` deliveries
#: (none for the surrogate: the fetch script never records it).
BAD_TAGS = {"tag-not-utf8": (b'"bad-\xff"', "'properties.delivery_tag' is not UTF-8",
                             "can't decode byte 0xff"),
            "tag-surrogate": (b'"bad-\\udcff"', "not a JSON object", "")}


def _undecodable(setup: Setup, kind: str) -> tuple[bytes, str | bytes, str, str]:
    """A task message of the test's queue spoiled as ``kind`` of :data:`UNDECODABLE` or
    :data:`BAD_TAGS` says, its delivery tag as Redis keys its records, and the reasons a fetch
    and a restore give when they dead-letter it."""
    if kind in UNDECODABLE:
        bad, tag = _bad_message(setup, _undecodable_header(kind))
        return bad, tag, UNDECODABLE[kind][1], UNDECODABLE[kind][1]
    bad, tag = _bad_message(setup, lambda envelope: json.dumps(envelope).encode())
    spoiled, fetched, restored = BAD_TAGS[kind]
    return bad.replace(json.dumps(tag).encode(), spoiled), spoiled[1:-1], fetched, restored


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pool", ["solo", "threads"])
@pytest.mark.parametrize("when", ["queued", "sent-idle"])
@pytest.mark.parametrize("kind", sorted(UNDECODABLE) + sorted(BAD_TAGS))
def test_a_message_python_cannot_decode_is_dead_lettered(setup: Setup, kind: str, when: str,
                                                         pool: str):
    """The fetch script's JSON reads it, Python's refuses it (or its tag: not UTF-8): the worker
    dead-letters it with the reason, settled by the tag the script read, and runs the next
    task. The worker died (its handler decoded the item again to find the tag; it decoded the
    tag), leaving it owned: a crash loop."""
    client = redis.Redis.from_url(BROKER)
    bad, tag, reason, _ = _undecodable(setup, kind)
    with _between_two_tasks(setup, bad, when, pool):
        assert sorted(r["tag"] for r in setup.wait_records("mark", 2)) == ["first", "second"]
        dead = setup.dead_letters(expected=1)
    assert [m.body for m in dead] == [bad]
    assert reason in dead[0].headers[DEAD_REASON_HEADER]
    assert not client.hexists("unacked", tag)
    assert client.zscore("unacked_index", tag) is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("held", ["owned", "processing"])
@pytest.mark.parametrize("kind", [*sorted(UNDECODABLE), "tag-not-utf8"])
def test_a_dead_owners_message_python_cannot_decode_is_dead_lettered(setup: Setup, unique: str,
                                                                     kind: str, held: str):
    """A worker died holding such a message: ``owned`` (the fetch script recorded it, the
    worker was lost before it read the reply) or in its ``processing`` list (its idle wait
    moved it). The worker restoring it dead-letters it and runs the next task; kombu's restore
    decoded the unacked record and raised, in every worker that tried (with a tag that is not
    UTF-8, every worker died decoding the owned tag)."""
    client = redis.Redis.from_url(BROKER)
    bad, tag, fetched, restored = _undecodable(setup, kind)
    owner = f"dead-{unique}"
    if held == "owned":
        client.lpush(setup.queue, bad)
        with redis_broker.connection(BROKER, transport=worker_channel.Transport) as conn:
            channel = conn.channel()
            channel.do_restore = False
            channel.own(owner, ttl=60)
            Consumer(channel, [Queue(setup.queue)], callbacks=[lambda body, message: None],
                     auto_declare=False).consume()
            assert channel.send_fetch([setup.queue], 1)  # its reply never read
            assert wait_for(lambda: client.hexists("unacked", tag), 5)
    else:
        client.sadd(OWNERS_KEY, owner)
        client.sadd(worker_channel.PROCESSING_QUEUES_KEY.format(owner=owner), setup.queue)
        client.lpush(PROCESSING_KEY.format(owner=owner, queue=setup.queue), bad)
    client.delete(ALIVE_KEY.format(owner=owner))
    setup.app().send_task("tasks.mark", args=["next"])
    with setup.worker("-P", "solo"):
        assert [r["tag"] for r in setup.wait_records("mark", 1)] == ["next"]
        dead = setup.dead_letters(expected=1)
        assert wait_for(lambda: not client.sismember(OWNERS_KEY, owner), 10)
    assert [m.body for m in dead] == [bad]
    assert (restored if held == "owned" else fetched) in dead[0].headers[DEAD_REASON_HEADER]
    assert dead[0].headers[DEAD_QUEUE_HEADER] == setup.queue
    assert not client.hexists("unacked", tag)
    assert client.zscore("unacked_index", tag) is None


TAG = ("properties", "delivery_tag")


def _with(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], bytes]:
    """A change to a task message that sets its member at ``path`` to ``value``."""
    def change(envelope: dict[str, Any]) -> bytes:
        member = envelope
        for parent in path[:-1]:
            member = member[parent]
        member[path[-1]] = value
        return json.dumps(envelope).encode()
    return change


#: Task messages a worker cannot deliver as they are, each a member set (by the test's unique
#: integer) and the reason it is dead-lettered with: a delivery tag that is no string (the key
#: of the message's records: 7, "7" and, to Redis's Lua, 7.0 would share one, and a lost
#: worker's restore would put back one of them); headers that are null (kombu cannot restore
#: such a message); a body encoding kombu does not know (the worker stalled on it); a content
#: type that is no string; a body escaping a lone surrogate (which no base64 holds).
UNDELIVERABLE: dict[str, tuple[tuple[str, ...], Callable[[int], Any], str]] = {
    "tag-an-integer": (TAG, lambda unique: unique, "no 'properties.delivery_tag' string"),
    "tag-fraction": (TAG, lambda unique: unique + 0.5, "no 'properties.delivery_tag' string"),
    "tag-integral-float": (TAG, float, "no 'properties.delivery_tag' string"),
    "headers-null": (("headers",), lambda unique: None, "'headers' is not an object"),
    "unknown-body-encoding": (("properties", "body_encoding"), lambda unique: "rot13",
                              "unknown 'properties.body_encoding' 'rot13'"),
    "content-type-not-a-string": (("content-type",), lambda unique: 5,
                                  "'content-type' is not a string"),
    "body-a-lone-surrogate": (("body",), lambda unique: "\udcff", "'body' is not base64"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("when", ["queued", "sent-idle"])
@pytest.mark.parametrize("kind", sorted(UNDELIVERABLE))
def test_a_message_kombu_cannot_deliver_as_it_is_is_dead_lettered_with_the_reason(
        setup: Setup, unique: str, kind: str, when: str):
    """Taken by the busy fetch or the idle wait, between two tasks that run: dead-lettered
    whole with the reason, no records left (under its tag or the digits of the unique
    integer)."""
    client = redis.Redis.from_url(BROKER)
    path, value, reason = UNDELIVERABLE[kind]
    bad, its_tag = _bad_message(setup, _with(path, value(int(unique, 16))))
    with _between_two_tasks(setup, bad, when):
        assert sorted(r["tag"] for r in setup.wait_records("mark", 2)) == ["first", "second"]
        dead = setup.dead_letters(expected=1)
    assert [m.body for m in dead] == [bad]
    assert dead[0].headers[DEAD_REASON_HEADER] == f"not a kombu message: {reason}"
    for key in (its_tag, str(int(unique, 16))):
        assert not client.hexists("unacked", key)
        assert client.zscore("unacked_index", key) is None


@pytest.mark.timeout(60)
def test_a_fetch_that_fails_half_way_leaves_what_it_took_recorded(setup: Setup, unique: str):
    """A priority list of the queue that is not a list makes the fetch script fail after it
    popped the messages before it: they stay recorded as the owner's unacked deliveries (what
    a restore gives back), not popped into the void."""
    client = redis.Redis.from_url(BROKER)
    app = setup.app()
    for i in range(3):
        app.send_task("tasks.mark", args=[i])
    wrong = f"{setup.queue}\x06\x163"  # kombu's list for priority 3, taken after the queue's own
    client.set(wrong, "not a list")
    owner = f"half-{unique}"
    owned = OWNED_KEY.format(owner=owner)
    try:
        with redis_broker.connection(BROKER, transport=worker_channel.Transport) as conn:
            channel = conn.channel()
            channel.own(owner, ttl=60)
            Consumer(channel, [Queue(setup.queue)], callbacks=[lambda body, message: None],
                     auto_declare=False).consume()
            with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
                channel.fetch_many([setup.queue], 10)
        taken = [tag.decode() for tag in client.smembers(owned)]
        assert len(taken) == 3 and not client.llen(setup.queue)
        assert all(client.hexists("unacked", tag) and client.zscore("unacked_index", tag)
                   for tag in taken)
    finally:
        tags = [tag.decode() for tag in client.smembers(owned)]
        if tags:
            client.hdel("unacked", *tags)
            client.zrem("unacked_index", *tags)
        client.delete(wrong, owned, ALIVE_KEY.format(owner=owner))
        client.srem(OWNERS_KEY, owner)


CELERY_TASKS = """
import os
import redis
from celery import Celery

app = Celery("celery_tasks", broker=os.environ["QTUI_TEST_BROKER"])
app.conf.task_default_queue = os.environ["QTUI_TEST_QUEUE"] + "-celery"
_redis = redis.Redis.from_url(os.environ["QTUI_TEST_RECORDS"])

@app.task
def count(key):
    _redis.incr(key)
"""


@pytest.mark.timeout(120)
def test_a_qtui_worker_never_restores_a_celery_workers_deliveries(setup: Setup):
    write_module(setup.directory, "celery_tasks", CELERY_TASKS)
    queue = f"{setup.queue}-celery"
    counter = f"{setup.queue}:count"
    records = redis.Redis.from_url(REDIS_URL)
    celery_argv = [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "--pool",
                   "solo", "-Q", queue, "-n", f"celery-{queue}@%h", "--loglevel", "INFO",
                   "--without-mingle", "--without-gossip"]
    celery = Celery("client", broker=BROKER)
    try:
        with setup.worker("-P", "solo"), \
                running(celery_argv, setup.directory, "ready.", timeout=60, env=setup.env):
            # Held unacked by the Celery worker until due, far past qtui's visibility timeout.
            celery.send_task("celery_tasks.count", args=[counter], queue=queue, countdown=6)
            assert wait_for(lambda: records.get(counter) is not None, 30)
            celery.send_task("celery_tasks.count", args=[f"{counter}:after"], queue=queue)
            assert wait_for(lambda: records.get(f"{counter}:after") is not None, 30)
            runs = int(records.get(counter))
    finally:
        celery.close()
        records.delete(counter, f"{counter}:after")
    assert runs == 1


@pytest.mark.timeout(90)
def test_a_task_holding_the_gil_past_the_visibility_timeout_runs_once(setup: Setup):
    app = setup.app()
    with setup.worker("-P", "solo", name="a"):
        app.send_task("tasks.hold_gil", args=[3 * VISIBILITY_TIMEOUT])
        assert setup.wait_records("started", 1)
        with setup.worker("-P", "solo", name="b"):
            assert setup.wait_records("done", 1, timeout=40)
            app.send_task("tasks.mark", args=["after"])  # either worker; both are consuming
            assert setup.wait_records("mark", 1)
    assert len(setup.records("started")) == 1


@pytest.mark.timeout(60)
def test_the_fetch_takes_the_queues_in_turn(setup: Setup):
    busy, other = setup.queue, f"{setup.queue}-b"
    app = setup.app()
    for i in range(500):
        app.send_task("tasks.mark", args=[f"a{i}"], queue=busy)
    app.send_task("tasks.mark", args=["b0"], queue=other)
    with setup.worker("-P", "solo", "-Q", f"{busy},{other}"):
        assert wait_for(lambda: "b0" in {r["tag"] for r in setup.records("mark")}, 30)
    order = [r["tag"] for r in setup.records("mark")]
    assert order.index("b0") < 10, order[:20]


@pytest.mark.timeout(60)
def test_a_restore_cut_short_is_finished_by_the_next_worker(setup: Setup, unique: str):
    app = setup.app()
    for i in range(300):
        app.send_task("tasks.mark", args=[i])
    owner = f"dead-{unique}"
    client = redis.Redis.from_url(BROKER)
    with redis_broker.connection(BROKER, transport=worker_channel.Transport) as conn:
        channel = conn.channel()
        channel.do_restore = False  # an owner that died holding them all
        channel.own(owner, ttl=60)
        Consumer(channel, [Queue(setup.queue)], callbacks=[lambda body, message: None],
                 auto_declare=False).consume()
        assert channel.fetch_many([setup.queue], 300) == 300
        client.delete(ALIVE_KEY.format(owner=owner))
        # A worker killed after restoring a third of them: the owner is still registered.
        for tag in list(client.smembers(OWNED_KEY.format(owner=owner)))[:100]:
            channel.qos.restore_by_tag(tag.decode(), client)
    with setup.worker("-P", "threads", "-c", "4"):
        ran = wait_for(lambda: len(setup.records("mark")) >= 300, 30)
        assert wait_for(lambda: not client.sismember(OWNERS_KEY, owner), 10)
    assert ran, f"{len(setup.records('mark'))} of 300 ran"
    assert sorted(r["tag"] for r in setup.records("mark")) == list(range(300))
    assert not client.exists(OWNED_KEY.format(owner=owner))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("then", ["next-idle-turn", "fetch"])
def test_an_adoption_redis_refuses_changes_nothing_and_is_done_later(tmp_path, unique, then):
    """The call that records what an idle wait delivered is refused (the owner's set is of
    another type): the message stays in the processing list, recorded nowhere, and is recorded
    at the worker's next idle turn; a fetch that takes it from there first records it without
    delivering it a second time."""
    port = spare_port()
    with redis_server(tmp_path, port, durable=False):
        url, queue, owner = f"redis://127.0.0.1:{port}/0", f"qw-{unique}", f"refused-{unique}"
        client = redis.Redis(port=port)
        with owned_channel(url, owner, queue) as (conn, channel, received):
            client.set(OWNED_KEY.format(owner=owner), "not a set")
            Producer(conn.channel()).publish({"n": 1}, routing_key=queue)
            conn.drain_events(timeout=5)  # the idle wait delivers it
            assert len(received) == 1
            tag = received[0].delivery_tag
            channel.read_unread()  # the adoption's reply: refused
            processing = PROCESSING_KEY.format(owner=owner, queue=queue)
            assert client.llen(processing) == 1 and not client.hexists("unacked", tag)
            client.delete(OWNED_KEY.format(owner=owner))
            if then == "fetch":
                assert channel.fetch_many([queue], 1, moved=True) == 0
            else:
                with pytest.raises(socket.timeout):
                    conn.drain_events(timeout=0.5)
            assert len(received) == 1
            assert not client.llen(processing) and client.hexists("unacked", tag)
            assert client.sismember(OWNED_KEY.format(owner=owner), tag)
            received[0].ack()
            assert not client.hexists("unacked", tag)
